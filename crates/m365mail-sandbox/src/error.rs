//! The crate's one error type.

use std::{io, path::PathBuf};

/// Everything that can go wrong when starting, configuring or administering the sandbox.
///
/// Token-endpoint failures are not errors of the sandbox: they are answers (Entra error JSON) sent to
/// clients, built in `identity::errors`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Binding or accepting on the listening socket failed (the reason is the source).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address that could not be bound.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading or writing a file (tenant file, CA file) failed.
    #[error("{action} {path}: {source}")]
    File {
        /// What was being done ("reading", "writing").
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A tenant file could not be parsed or is inconsistent.
    #[error("invalid tenant model: {0}")]
    TenantModel(String),
    /// Generating keys or certificates failed.
    #[error("cannot generate {what}: {detail}")]
    Crypto {
        /// Which key or certificate.
        what: &'static str,
        /// The library's message.
        detail: String,
    },
    /// An admin operation named something the tenant does not hold.
    #[error("{kind} not found: {name}")]
    NotFound {
        /// What kind of object ("user", "application", "device code", ...).
        kind: &'static str,
        /// The name or identifier that was looked up.
        name: String,
    },
    /// An admin operation is not possible in the current state (e.g. a device code already redeemed).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An admin request was malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl SandboxError {
    pub(crate) fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub(crate) fn crypto(what: &'static str, detail: impl ToString) -> Self {
        Self::Crypto {
            what,
            detail: detail.to_string(),
        }
    }
}
