//! Microsoft Entra ID (identity platform v2.0) tokens for IMAP, POP, SMTP and Graph.
//!
//! - [`Authority`] (cloud + tenant) builds endpoints and refuses tenant aliases a grant cannot use.
//! - [`TokenClient`] runs one grant per method: [`TokenClient::password`] (ROPC),
//!   [`TokenClient::device_code`], [`TokenClient::client_credentials`] (secret or certificate),
//!   [`TokenClient::refresh`], [`TokenClient::auth_code`] (PKCE + loopback listener).
//! - [`AuthError`] classifies every failure ([`ErrorClass`]) with a cause and a remedy; [`aadsts`] is the
//!   catalogue of Entra codes.
//! - [`TokenCache`] persists tokens (0600, atomic, cross-process lock); [`TokenProvider`] reuses them, refreshes
//!   with the rotated refresh token, and lets concurrent callers share one in-flight request.
//! - [`inspect()`] decodes a JWT without verifying and says which protocols it can serve.
//!
//! ```no_run
//! # async fn example() -> Result<(), m365mail::auth::AuthError> {
//! use std::sync::Arc;
//! use m365mail::auth::provider::FlowSource;
//! use m365mail::auth::*;
//! use m365mail::time::SystemClock;
//!
//! let authority = Authority::new(Cloud::Global, "contoso.onmicrosoft.com".parse()?);
//! let client = TokenClient::new(
//!     authority.clone(),
//!     "00000000-0000-0000-0000-000000000000",
//!     ClientCredential::Public,
//!     ClientOptions::default(),
//! )?;
//! let scopes = Scopes::for_target(Target::Imap, Access::Delegated, &authority.cloud);
//! let flow = Flow::DeviceCode { on_code: Arc::new(|code| eprintln!("{}", code.message)) };
//! let cache = Arc::new(TokenCache::open(TokenCache::default_path().expect("a data dir"))?);
//! let key = CacheKey::new(&authority, client.client_id(), "user@contoso.onmicrosoft.com", &scopes);
//! let provider = TokenProvider::new(
//!     Arc::new(FlowSource { client, flow }),
//!     cache,
//!     key,
//!     scopes,
//!     Arc::new(SystemClock),
//! );
//! let token = provider.token().await?; // cached, refreshed, or a new device-code sign-in
//! # let _ = token.token.expose();
//! # Ok(()) }
//! ```

pub mod aadsts;
pub mod assertion;
pub mod authority;
pub mod cache;
pub mod client;
pub mod device_code;
pub mod error;
pub mod inspect;
#[cfg(feature = "keyring")]
pub mod keyring;
pub mod pkce;
pub mod provider;
pub mod response;
pub mod scopes;

pub use assertion::{AssertionAlg, CertificateCredential};
pub use authority::{Authority, Cloud, Tenant};
pub use cache::{CacheKey, CachedToken, KeyLock, SecretStore, TokenCache};
pub use client::{AuthCodeOptions, ClientCredential, ClientOptions, RetryPolicy, TokenClient};
pub use device_code::{DeviceCode, DevicePoller};
pub use error::{AuthError, EntraError, ErrorClass, Grant};
pub use inspect::{Inspection, ProtocolVerdict, inspect};
pub use pkce::Pkce;
pub use provider::{AccessToken, Flow, TokenProvider, TokenSource};
pub use response::TokenResponse;
pub use scopes::{Access, Scopes, Target};
