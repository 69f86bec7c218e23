//! [`TokenProvider`]: cache + flow + single flight.
//!
//! `token()` returns the cached access token while it is fresh (default margin 5 minutes), else redeems the
//! cached refresh token (saving the rotated one), else runs the configured flow. Concurrent callers for the
//! same cache key in one process wait for a single in-flight request (a per-key async mutex in a process-wide
//! registry) and then read its result from the cache; across processes a per-key lock file next to the
//! cache does the same (a second process waits, then finds the first one's token in the cache).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, SystemTime};

use url::Url;

use super::cache::{CacheKey, CachedToken, DEFAULT_MARGIN, KeyLock, TokenCache};
use super::client::{AuthCodeOptions, TokenClient};
use super::device_code::DeviceCode;
use super::error::AuthError;
use super::response::TokenResponse;
use super::scopes::Scopes;
use crate::secret::Secret;
use crate::time::{BoxFuture, Clock};

/// Where tokens come from when the cache cannot serve: the configured flow, and refresh.
pub trait TokenSource: Send + Sync {
    /// Runs the configured flow (no usable refresh token).
    fn acquire<'a>(&'a self, scopes: &'a Scopes)
    -> BoxFuture<'a, Result<TokenResponse, AuthError>>;
    /// Redeems a refresh token.
    fn refresh<'a>(
        &'a self,
        refresh_token: &'a Secret,
        scopes: &'a Scopes,
    ) -> BoxFuture<'a, Result<TokenResponse, AuthError>>;
}

/// The flow a [`TokenClient`] runs when no cached token can serve.
#[derive(Clone)]
pub enum Flow {
    /// ROPC.
    Password {
        /// UPN.
        username: String,
        /// Password.
        password: Secret,
    },
    /// Device code; `on_code` shows the server's message.
    DeviceCode {
        /// Called with the code (show `code.message`).
        on_code: Arc<dyn Fn(&DeviceCode) + Send + Sync>,
    },
    /// Client credentials (the client's secret or certificate).
    ClientCredentials,
    /// Bootstrap from a given refresh token.
    RefreshToken {
        /// The refresh token.
        refresh_token: Secret,
    },
    /// Auth code + PKCE; `open_browser` receives the authorize URL.
    AuthCode {
        /// Listener and authorize options.
        options: AuthCodeOptions,
        /// Opens (or prints) the URL.
        open_browser: Arc<dyn Fn(&Url) + Send + Sync>,
    },
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish(),
            Self::DeviceCode { .. } => f.write_str("DeviceCode"),
            Self::ClientCredentials => f.write_str("ClientCredentials"),
            Self::RefreshToken { .. } => f.write_str("RefreshToken([REDACTED])"),
            Self::AuthCode { options, .. } => f
                .debug_struct("AuthCode")
                .field("options", options)
                .finish(),
        }
    }
}

/// A [`TokenSource`] over a [`TokenClient`] and a [`Flow`].
#[derive(Debug, Clone)]
pub struct FlowSource {
    /// The client.
    pub client: TokenClient,
    /// The flow.
    pub flow: Flow,
}

impl TokenSource for FlowSource {
    fn acquire<'a>(
        &'a self,
        scopes: &'a Scopes,
    ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
        Box::pin(async move {
            match &self.flow {
                Flow::Password { username, password } => {
                    self.client.password(username, password, scopes).await
                }
                Flow::DeviceCode { on_code } => {
                    self.client
                        .device_code(scopes, |c| on_code(c), std::future::pending())
                        .await
                }
                Flow::ClientCredentials => self.client.client_credentials(scopes).await,
                Flow::RefreshToken { refresh_token } => {
                    self.client.refresh(refresh_token, scopes).await
                }
                Flow::AuthCode {
                    options,
                    open_browser,
                } => {
                    self.client
                        .auth_code(scopes, options, |u| open_browser(u), std::future::pending())
                        .await
                }
            }
        })
    }

    fn refresh<'a>(
        &'a self,
        refresh_token: &'a Secret,
        scopes: &'a Scopes,
    ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
        Box::pin(self.client.refresh(refresh_token, scopes))
    }
}

/// How a token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenOrigin {
    /// Reused from the cache.
    Cache,
    /// Minted with the cached refresh token.
    Refresh,
    /// The configured flow ran.
    Flow,
}

/// An access token ready to use.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The token.
    pub token: Secret,
    /// When it expires.
    pub expires_at: SystemTime,
    /// Granted scopes, when known.
    pub scope: Option<String>,
    /// Whether a refresh token is cached for the account.
    pub has_refresh_token: bool,
    /// How it was obtained.
    pub origin: TokenOrigin,
    /// The signed-in user named in the access token (`upn`, else `unique_name`, else `preferred_username`),
    /// when it is a JWT with such a claim (personal-account tokens are opaque).
    pub account: Option<String>,
}

impl AccessToken {
    fn from_cached(c: &CachedToken, origin: TokenOrigin) -> Self {
        Self {
            token: c.access_token.clone(),
            expires_at: c.expires_at_time(),
            scope: c.scope.clone(),
            has_refresh_token: c.refresh_token.is_some(),
            origin,
            account: token_accounts(c.access_token.expose(), None)
                .into_iter()
                .next(),
        }
    }
}

/// The user names a token response is for, lower-cased: `upn`, `unique_name`, `preferred_username` and
/// `email` of the access token (when it is a JWT) and of the ID token (when present). Empty when neither can
/// be decoded (opaque tokens). Unverified decoding: this guards against the wrong person completing an
/// interactive sign-in, not against a forged token (which the token endpoint, reached over TLS, does not send).
pub fn token_accounts(access_token: &str, id_token: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for token in std::iter::once(access_token).chain(id_token) {
        let Some(serde_json::Value::Object(claims)) = token
            .split('.')
            .nth(1)
            .and_then(super::inspect::jwt_segment)
        else {
            continue;
        };
        for name in ["upn", "unique_name", "preferred_username", "email"] {
            if let Some(v) = claims.get(name).and_then(serde_json::Value::as_str) {
                let v = v.trim().to_ascii_lowercase();
                if !v.is_empty() && !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Process-wide in-flight registry: one async mutex per cache key, alive while someone holds it.
static INFLIGHT: LazyLock<Mutex<HashMap<CacheKey, Weak<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Mutex::default);

fn flight_lock(key: &CacheKey) -> Arc<tokio::sync::Mutex<()>> {
    let mut map = INFLIGHT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(existing) = map.get(key).and_then(Weak::upgrade) {
        return existing;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    map.insert(key.clone(), Arc::downgrade(&lock));
    lock
}

/// Cache + source + single flight. See the [module docs](self).
pub struct TokenProvider {
    source: Arc<dyn TokenSource>,
    cache: Arc<TokenCache>,
    key: CacheKey,
    scopes: Scopes,
    clock: Arc<dyn Clock>,
    margin: Duration,
    expected_account: Option<String>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("key", &self.key)
            .field("cache", &self.cache)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider for one cache key.
    pub fn new(
        source: Arc<dyn TokenSource>,
        cache: Arc<TokenCache>,
        key: CacheKey,
        scopes: Scopes,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            source,
            cache,
            key,
            scopes,
            clock,
            margin: DEFAULT_MARGIN,
            expected_account: None,
        }
    }

    /// Refuses (and does not cache) a token from the flow that names another user than `account` (the
    /// `--username` / login hint of an interactive flow). Skipped when the token names no user (opaque).
    pub fn with_expected_account(mut self, account: Option<String>) -> Self {
        self.expected_account = account.map(|a| a.trim().to_ascii_lowercase());
        self
    }

    /// Changes the reuse margin (default 5 minutes).
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The cache key.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// A usable access token: cached, refreshed, or from the flow.
    pub async fn token(&self) -> Result<AccessToken, AuthError> {
        if let Some(hit) = self.fresh_cached().await? {
            return Ok(hit);
        }
        let lock = flight_lock(&self.key);
        let _guard = lock.lock().await;
        // Whoever held the lock before us may have just stored a fresh token: share it.
        if let Some(hit) = self.fresh_cached().await? {
            return Ok(hit);
        }
        // The same across processes: wait for another process renewing this key, then reuse its token.
        let _key_lock = self.key_lock().await?;
        let cached = self.cache_op(|c, k| c.get(k)).await?;
        if let Some(hit) = cached.as_ref().and_then(|c| self.if_fresh(c)) {
            return Ok(hit);
        }
        self.renew(cached).await
    }

    /// Ignores the cached access token (e.g. after the server rejected it) but still prefers refresh.
    pub async fn force_renew(&self) -> Result<AccessToken, AuthError> {
        let lock = flight_lock(&self.key);
        let _guard = lock.lock().await;
        let _key_lock = self.key_lock().await?;
        let cached = self.cache_op(|c, k| c.get(k)).await?;
        self.renew(cached).await
    }

    /// Runs the flow again even when a cached access or refresh token could serve (`token get --force` on an
    /// interactive flow: sign in again, e.g. as another user or after a consent change). The new tokens
    /// replace the cached ones.
    pub async fn run_flow(&self) -> Result<AccessToken, AuthError> {
        let lock = flight_lock(&self.key);
        let _guard = lock.lock().await;
        let _key_lock = self.key_lock().await?;
        self.renew(None).await
    }

    /// Takes the cross-process lock of the key by polling (never a blocking `flock` on a worker thread), so
    /// dropping this future (Ctrl-C, a timeout) stops waiting at once. Says once who holds the lock (what the
    /// holder wrote into the lock file: its pid and `token request for <key>`); gives up after the cache's
    /// lock timeout ([`TokenCache::with_lock_timeout`]) with [`AuthError::CacheLocked`].
    async fn key_lock(&self) -> Result<Option<KeyLock>, AuthError> {
        let timeout = self.cache.lock_timeout();
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(10);
        let mut said = false;
        loop {
            if let Some(lock) = self.cache_op(|c, k| c.try_lock_key(k)).await? {
                if said {
                    tracing::info!("got the token lock");
                }
                return Ok(lock);
            }
            let waited = started.elapsed();
            if !said || waited >= timeout {
                let holder = self.cache_op(|c, k| Ok(c.key_lock_holder(k))).await?;
                if !said && (holder.is_some() || waited >= Duration::from_secs(1)) {
                    said = true;
                    super::cache::warn_waiting(holder.as_deref(), timeout);
                }
                if waited >= timeout {
                    return Err(AuthError::CacheLocked {
                        path: self
                            .cache
                            .path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        holder,
                        waited: timeout,
                    });
                }
            }
            tokio::time::sleep(delay.min(timeout.saturating_sub(waited))).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }

    /// Renews from `cached` (the entry read under both locks): its refresh token, else the flow.
    async fn renew(&self, cached: Option<CachedToken>) -> Result<AccessToken, AuthError> {
        if let Some(rt) = cached.and_then(|c| c.refresh_token) {
            tracing::debug!("access token stale; redeeming the cached refresh token");
            match self.source.refresh(&rt, &self.scopes).await {
                Ok(resp) => return self.save(resp, TokenOrigin::Refresh).await,
                Err(e) if e.refresh_token_is_dead() => {
                    tracing::info!(error = %e, "cached refresh token is no longer valid; dropping it");
                    self.cache_op(|c, k| c.drop_refresh_token(k)).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let resp = self.source.acquire(&self.scopes).await?;
        if let Some(expected) = &self.expected_account {
            let accounts = token_accounts(
                resp.access_token.expose(),
                resp.id_token.as_ref().map(Secret::expose),
            );
            if !accounts.is_empty() && !accounts.contains(expected) {
                return Err(AuthError::AccountMismatch {
                    expected: expected.clone(),
                    signed_in: accounts[0].clone(),
                });
            }
        }
        self.save(resp, TokenOrigin::Flow).await
    }

    async fn save(
        &self,
        resp: TokenResponse,
        origin: TokenOrigin,
    ) -> Result<AccessToken, AuthError> {
        let stored = self.cache_op(move |c, k| c.store(k, &resp)).await?;
        Ok(AccessToken::from_cached(&stored, origin))
    }

    async fn fresh_cached(&self) -> Result<Option<AccessToken>, AuthError> {
        Ok(self
            .cache_op(|c, k| c.get(k))
            .await?
            .and_then(|c| self.if_fresh(&c)))
    }

    /// `c` as a cache hit, if it is fresh now.
    fn if_fresh(&self, c: &CachedToken) -> Option<AccessToken> {
        c.is_fresh(self.clock.now(), self.margin)
            .then(|| AccessToken::from_cached(c, TokenOrigin::Cache))
    }

    /// Runs a cache operation off the async threads (it may block on the cross-process file lock).
    async fn cache_op<T: Send + 'static>(
        &self,
        op: impl FnOnce(&TokenCache, &CacheKey) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        if self.cache.path().is_none() {
            return op(&self.cache, &self.key);
        }
        let cache = Arc::clone(&self.cache);
        let key = self.key.clone();
        tokio::task::spawn_blocking(move || op(&cache, &key))
            .await
            .map_err(|e| AuthError::Cache {
                path: "?".into(),
                detail: format!("cache task failed: {e}"),
            })?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::auth::{Authority, Cloud, Tenant};
    use crate::time::FakeClock;

    /// Counts upstream requests; each takes a little real time so callers really overlap.
    #[derive(Default)]
    struct Counting {
        acquires: AtomicUsize,
        refreshes: AtomicUsize,
        clock: Option<FakeClock>,
        refresh_fails_with: Option<&'static str>,
    }

    impl Counting {
        fn response(&self, at: String, rt: &str) -> TokenResponse {
            let body = format!(
                r#"{{"token_type":"Bearer","access_token":"{at}","expires_in":3600,"refresh_token":"{rt}"}}"#
            );
            TokenResponse::parse(body.as_bytes(), self.clock.as_ref().unwrap().now(), "u").unwrap()
        }
    }

    impl TokenSource for Counting {
        fn acquire<'a>(
            &'a self,
            _s: &'a Scopes,
        ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
            Box::pin(async move {
                let n = self.acquires.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(self.response(format!("flow-at-{n}"), &format!("rt-{n}")))
            })
        }
        fn refresh<'a>(
            &'a self,
            rt: &'a Secret,
            _s: &'a Scopes,
        ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
            Box::pin(async move {
                let n = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(json) = self.refresh_fails_with {
                    return Err(crate::auth::EntraError::parse(400, json.as_bytes())
                        .unwrap()
                        .into());
                }
                Ok(self.response(
                    format!("refreshed-at-{n}-from-{}", rt.expose()),
                    &format!("rt-r{n}"),
                ))
            })
        }
    }

    fn key(account: &str) -> CacheKey {
        let a = Authority::new(Cloud::Global, Tenant::Domain("contoso.com".into()));
        CacheKey::new(&a, "client", account, &Scopes::parse("x"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hundred_concurrent_callers_one_upstream_request() {
        let clock = FakeClock::fixed();
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(TokenCache::open(dir.path().join("c.json")).unwrap());
        let source = Arc::new(Counting {
            clock: Some(clock.clone()),
            ..Default::default()
        });
        let provider = Arc::new(TokenProvider::new(
            source.clone(),
            cache,
            key("single-flight@x"),
            Scopes::parse("x"),
            Arc::new(clock.clone()),
        ));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let p = Arc::clone(&provider);
                tokio::spawn(async move { p.token().await.unwrap() })
            })
            .collect();
        let mut origins = HashMap::new();
        for t in tasks {
            let tok = t.await.unwrap();
            assert_eq!(tok.token.expose(), "flow-at-1");
            *origins.entry(tok.origin).or_insert(0) += 1;
        }
        assert_eq!(
            source.acquires.load(Ordering::SeqCst),
            1,
            "exactly one upstream request"
        );
        assert_eq!(origins[&TokenOrigin::Flow], 1);
        assert_eq!(origins[&TokenOrigin::Cache], 99);
    }

    struct SignsInAs(&'static str, FakeClock);

    impl TokenSource for SignsInAs {
        fn acquire<'a>(
            &'a self,
            _s: &'a Scopes,
        ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
            Box::pin(async move {
                let at =
                    crate::auth::inspect::tests::jwt(serde_json::json!({"upn": self.0, "exp": 1}));
                let body = format!(
                    r#"{{"token_type":"Bearer","access_token":"{at}","expires_in":3600,"refresh_token":"rt"}}"#
                );
                TokenResponse::parse(body.as_bytes(), self.1.now(), "u")
            })
        }
        fn refresh<'a>(
            &'a self,
            _rt: &'a Secret,
            _s: &'a Scopes,
        ) -> BoxFuture<'a, Result<TokenResponse, AuthError>> {
            Box::pin(async { Err(AuthError::NoRefreshToken) })
        }
    }

    /// With --username bob, a sign-in completed by someone else is refused and not cached under bob.
    #[tokio::test]
    async fn a_token_for_another_account_is_refused_and_not_cached() {
        let clock = FakeClock::fixed();
        let cache = Arc::new(TokenCache::in_memory());
        let p = TokenProvider::new(
            Arc::new(SignsInAs("Mallory@X", clock.clone())),
            cache.clone(),
            key("bob@x"),
            Scopes::parse("x"),
            Arc::new(clock.clone()),
        )
        .with_expected_account(Some("Bob@X".into()));
        let e = p.token().await.unwrap_err();
        assert!(
            matches!(&e, AuthError::AccountMismatch { expected, signed_in } if expected == "bob@x" && signed_in == "mallory@x"),
            "{e:?}"
        );
        assert!(cache.get(&key("bob@x")).unwrap().is_none());
        let p = TokenProvider::new(
            Arc::new(SignsInAs("BOB@x", clock.clone())),
            cache.clone(),
            key("bob@x"),
            Scopes::parse("x"),
            Arc::new(clock.clone()),
        )
        .with_expected_account(Some("bob@x".into()));
        let t = p.token().await.unwrap();
        assert_eq!(t.account.as_deref(), Some("bob@x"));
        assert!(cache.get(&key("bob@x")).unwrap().is_some());
    }

    /// Waiting for another process's key lock is cancellable: dropping the future (Ctrl-C) returns at once,
    /// and no worker thread stays blocked in `flock`, so the runtime shuts down promptly.
    #[test]
    fn waiting_for_another_process_lock_is_cancellable() {
        let clock = FakeClock::fixed();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        // "Another process": a second cache handle on the same file holds the key's lock.
        let other = TokenCache::open(&path).unwrap();
        let held = other.lock_key(&key("busy@x")).unwrap().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(5));
            drop(held);
        });
        let provider = TokenProvider::new(
            Arc::new(Counting {
                clock: Some(clock.clone()),
                ..Default::default()
            }),
            Arc::new(TokenCache::open(&path).unwrap()),
            key("busy@x"),
            Scopes::parse("x"),
            Arc::new(clock),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let outcome = runtime.block_on(async {
            tokio::select! {
                r = provider.token() => Some(r),
                () = tokio::time::sleep(Duration::from_millis(300)) => None,
            }
        });
        assert!(outcome.is_none(), "the lock is held elsewhere");
        drop(runtime);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "runtime shutdown waited for a blocked lock: {:?}",
            started.elapsed()
        );
        release.join().unwrap();
    }

    /// Another process holds the key's lock (e.g. it runs a 15-minute device-code sign-in): the provider waits
    /// at most the cache's lock timeout, then gives up with a transient error naming that process and why it
    /// holds the lock. (It used to wait 30 minutes.)
    #[tokio::test]
    async fn waiting_for_a_key_lock_held_elsewhere_is_bounded_and_names_the_holder() {
        let clock = FakeClock::fixed();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let other = TokenCache::open(&path).unwrap();
        let _held = other.lock_key(&key("busy@x")).unwrap().unwrap();
        let source = Arc::new(Counting {
            clock: Some(clock.clone()),
            ..Default::default()
        });
        let provider = TokenProvider::new(
            source.clone(),
            Arc::new(
                TokenCache::open(&path)
                    .unwrap()
                    .with_lock_timeout(Duration::from_millis(300)),
            ),
            key("busy@x"),
            Scopes::parse("x"),
            Arc::new(clock),
        );
        let started = std::time::Instant::now();
        let e = tokio::time::timeout(Duration::from_secs(20), provider.token())
            .await
            .expect("the wait is bounded")
            .unwrap_err();
        let waited = started.elapsed();
        let expected = format!(
            "pid {}: token request for {}",
            std::process::id(),
            key("busy@x")
        );
        match &e {
            AuthError::CacheLocked { holder, waited, .. } => {
                assert_eq!(holder.as_deref(), Some(expected.as_str()));
                assert_eq!(*waited, Duration::from_millis(300));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.is_transient());
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(source.acquires.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn reuse_until_margin_then_refresh_with_rotated_token() {
        let clock = FakeClock::fixed();
        let cache = Arc::new(TokenCache::in_memory());
        let source = Arc::new(Counting {
            clock: Some(clock.clone()),
            ..Default::default()
        });
        let p = TokenProvider::new(
            source.clone(),
            cache.clone(),
            key("reuse@x"),
            Scopes::parse("x"),
            Arc::new(clock.clone()),
        );
        let t1 = p.token().await.unwrap();
        assert_eq!(t1.origin, TokenOrigin::Flow);
        clock.advance(Duration::from_secs(3600 - 301));
        assert_eq!(p.token().await.unwrap().origin, TokenOrigin::Cache);
        clock.advance(Duration::from_secs(2)); // now inside the 5-minute margin
        let t3 = p.token().await.unwrap();
        assert_eq!(t3.origin, TokenOrigin::Refresh);
        assert_eq!(t3.token.expose(), "refreshed-at-1-from-rt-1");
        // The rotated refresh token was saved and is used next time.
        clock.advance(Duration::from_secs(3600));
        let t4 = p.token().await.unwrap();
        assert_eq!(t4.token.expose(), "refreshed-at-2-from-rt-r1");
        assert_eq!(source.acquires.load(Ordering::SeqCst), 1);
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 2);
        // A custom margin.
        let p = p.with_margin(Duration::from_secs(0));
        clock.advance(Duration::from_secs(3599));
        assert_eq!(p.token().await.unwrap().origin, TokenOrigin::Cache);
    }

    /// Entra refresh tokens are multi-resource: after an IMAP sign-in, an SMTP token for the same account and
    /// app comes from the account's refresh token, not from another sign-in; `run_flow` signs in again.
    #[tokio::test]
    async fn one_sign_in_serves_every_scope_set_of_the_account() {
        let clock = FakeClock::fixed();
        let cache = Arc::new(TokenCache::in_memory());
        let source = Arc::new(Counting {
            clock: Some(clock.clone()),
            ..Default::default()
        });
        let a = Authority::new(Cloud::Global, Tenant::Domain("contoso.com".into()));
        let provider = |account: &str, scopes: &str| {
            TokenProvider::new(
                source.clone(),
                cache.clone(),
                CacheKey::new(&a, "client", account, &Scopes::parse(scopes)),
                Scopes::parse(scopes),
                Arc::new(clock.clone()),
            )
        };
        let imap = provider("adele@x", "imap offline_access");
        assert_eq!(imap.token().await.unwrap().origin, TokenOrigin::Flow);
        let smtp = provider("adele@x", "smtp offline_access");
        let t = smtp.token().await.unwrap();
        assert_eq!(t.origin, TokenOrigin::Refresh);
        assert_eq!(t.token.expose(), "refreshed-at-1-from-rt-1");
        // The rotated refresh token is the account's: IMAP's next renewal uses it.
        clock.advance(Duration::from_secs(3600));
        let t = imap.token().await.unwrap();
        assert_eq!(t.token.expose(), "refreshed-at-2-from-rt-r1");
        // Another account, or another app, does not share it.
        assert_eq!(
            provider("alex@x", "smtp offline_access")
                .token()
                .await
                .unwrap()
                .origin,
            TokenOrigin::Flow
        );
        assert_eq!(source.acquires.load(Ordering::SeqCst), 2);
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 2);
        // run_flow signs in again although a fresh access token and a refresh token are cached.
        let again = imap.run_flow().await.unwrap();
        assert_eq!(again.origin, TokenOrigin::Flow);
        assert_eq!(source.acquires.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn dead_refresh_token_falls_back_to_the_flow() {
        let clock = FakeClock::fixed();
        let cache = Arc::new(TokenCache::in_memory());
        let source = Arc::new(Counting {
            clock: Some(clock.clone()),
            refresh_fails_with: Some(r#"{"error":"invalid_grant","error_codes":[50173]}"#),
            ..Default::default()
        });
        let p = TokenProvider::new(
            source.clone(),
            cache.clone(),
            key("dead@x"),
            Scopes::parse("x"),
            Arc::new(clock.clone()),
        );
        p.token().await.unwrap();
        clock.advance(Duration::from_secs(4000));
        let t = p.token().await.unwrap();
        assert_eq!(t.origin, TokenOrigin::Flow);
        assert_eq!(t.token.expose(), "flow-at-2");
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn transient_refresh_failure_is_returned_not_swallowed() {
        let clock = FakeClock::fixed();
        let source = Arc::new(Counting {
            clock: Some(clock.clone()),
            refresh_fails_with: Some(r#"{"error":"temporarily_unavailable"}"#),
            ..Default::default()
        });
        let p = TokenProvider::new(
            source.clone(),
            Arc::new(TokenCache::in_memory()),
            key("t@x"),
            Scopes::parse("x"),
            Arc::new(clock.clone()),
        );
        p.token().await.unwrap();
        clock.advance(Duration::from_secs(4000));
        assert!(p.token().await.unwrap_err().is_transient());
        assert_eq!(source.acquires.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn flow_debug_hides_secrets() {
        let f = Flow::Password {
            username: "u@x".into(),
            password: Secret::new("pw-123"),
        };
        assert!(!format!("{f:?}").contains("pw-123"));
        let f = Flow::RefreshToken {
            refresh_token: Secret::new("rt-123"),
        };
        assert!(!format!("{f:?}").contains("rt-123"));
    }
}
