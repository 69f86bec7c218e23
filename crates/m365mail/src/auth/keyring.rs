//! [`KeyringStore`]: token secrets in the OS keychain through `keyring-core` (feature `keyring`).
//!
//! The library does not pick a platform store: the application installs one at startup with
//! `keyring_core::set_default_store(...)` (e.g. a Secret Service, macOS Keychain or Windows Credential Manager
//! store crate); tests use `keyring_core::mock::Store`. The cache file keeps expiry and scope only.

use super::cache::SecretStore;
use crate::secret::Secret;

/// A [`SecretStore`] over the keyring-core default store; entries are `(service, cache entry id)`.
#[derive(Debug, Clone)]
pub struct KeyringStore {
    service: String,
}

impl KeyringStore {
    /// A store using `service` as the keychain service name (e.g. `m365mail`).
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
        }
    }

    fn entry(&self, id: &str) -> Result<keyring_core::Entry, String> {
        keyring_core::Entry::new(&self.service, id).map_err(|e| e.to_string())
    }
}

impl SecretStore for KeyringStore {
    fn put(&self, id: &str, value: &Secret) -> Result<(), String> {
        self.entry(id)?
            .set_password(value.expose())
            .map_err(|e| e.to_string())
    }

    fn get(&self, id: &str) -> Result<Option<Secret>, String> {
        match self.entry(id)?.get_password() {
            Ok(v) => Ok(Some(Secret::new(v))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn delete(&self, id: &str) -> Result<(), String> {
        match self.entry(id)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::cache::CacheKey;
    use crate::auth::{Authority, Cloud, Scopes, TokenCache, TokenResponse};
    use crate::time::{Clock, FakeClock};

    #[test]
    fn tokens_live_in_the_keychain_not_the_file() {
        keyring_core::set_default_store(keyring_core::mock::Store::new().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let store = Arc::new(KeyringStore::new("m365mail-test"));
        let cache = TokenCache::open(&path)
            .unwrap()
            .with_secret_store(store.clone());
        let key = CacheKey::new(
            &Authority::new(Cloud::Global, "contoso.com".parse().unwrap()),
            "client",
            "u@x",
            &Scopes::parse("s"),
        );
        let body = br#"{"token_type":"Bearer","access_token":"AT-in-keychain","expires_in":3600,"refresh_token":"RT-in-keychain"}"#;
        let t = TokenResponse::parse(body, FakeClock::fixed().now(), "u").unwrap();
        cache.store(&key, &t).unwrap();
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(
            !file.contains("AT-in-keychain") && !file.contains("RT-in-keychain"),
            "{file}"
        );
        assert!(file.contains("in_secret_store"));
        let e = cache.get(&key).unwrap().unwrap();
        assert_eq!(e.access_token.expose(), "AT-in-keychain");
        assert_eq!(e.refresh_token.unwrap().expose(), "RT-in-keychain");
        // A response without a refresh token keeps the one in the keychain.
        let body = br#"{"token_type":"Bearer","access_token":"AT2","expires_in":3600}"#;
        cache
            .store(
                &key,
                &TokenResponse::parse(body, FakeClock::fixed().now(), "u").unwrap(),
            )
            .unwrap();
        assert_eq!(
            cache
                .get(&key)
                .unwrap()
                .unwrap()
                .refresh_token
                .unwrap()
                .expose(),
            "RT-in-keychain"
        );
        cache.drop_refresh_token(&key).unwrap();
        assert!(cache.get(&key).unwrap().unwrap().refresh_token.is_none());
        assert!(cache.remove(&key).unwrap());
        assert!(
            store.get(&key.to_string()).unwrap().is_none(),
            "removed from the keychain too"
        );
    }
}
