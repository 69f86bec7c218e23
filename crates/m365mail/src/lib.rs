//! m365mail: a Microsoft 365 mail connector. See also `README.md` in this crate.
//!
//! This crate currently holds the auth layer:
//! - [`secret::Secret`]: a redacting, zeroizing string for passwords, client secrets, keys and tokens;
//! - [`time`]: the injected [`time::Clock`] and [`time::Sleeper`] (tests use [`time::FakeClock`]);
//! - [`auth`]: Entra ID authorities, every token grant a mail connector needs ([`auth::TokenClient`]), Entra's
//!   error JSON and the AADSTS catalogue ([`auth::AuthError`]), the token cache and single-flight
//!   [`auth::TokenProvider`], and JWT inspection ([`auth::inspect()`]);
//! - [`http`]: the bounded read of reply bodies ([`http::read_bounded`], 1 MiB) every HTTP client uses.
//!
//! Secrets never reach logs or `Debug` output; the only way to read one is [`secret::Secret::expose`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod bridge;
pub mod cloud;
pub mod doctor;
pub mod endpoint;
pub mod error;
pub mod graph;
pub mod http;
pub mod imap;
pub mod mime;
pub mod outbound;
pub mod pop3;
pub mod read;
pub mod secret;
pub mod setup;
pub mod smtp;
pub mod store;
pub mod time;
pub mod tls;
pub mod transport;

pub use error::{Classified, ErrorClass};
pub use secret::Secret;
