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
pub use cache::{CacheKey, CachedToken, SecretStore, TokenCache};
pub use client::{AuthCodeOptions, ClientCredential, ClientOptions, RetryPolicy, TokenClient};
pub use device_code::{DeviceCode, DevicePoller};
pub use error::{AuthError, EntraError, ErrorClass, Grant};
pub use inspect::{Inspection, ProtocolVerdict, inspect};
pub use pkce::Pkce;
pub use provider::{AccessToken, Flow, TokenProvider, TokenSource};
pub use response::TokenResponse;
pub use scopes::{Access, Scopes, Target};
