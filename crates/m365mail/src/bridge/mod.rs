//! The local SMTP bridge: password-only devices and applications (printers, scanners, ERPs, scripts) submit
//! to it with a local username and password, and it relays each message to Microsoft 365 — byte for byte over
//! SMTP with XOAUTH2, or through Microsoft Graph where SMTP AUTH is switched off — answering the device only
//! once Microsoft 365 has answered.
//!
//! - [`accounts`]: local accounts (argon2id hashes, 0600 file), each mapped to a profile, the senders it
//!   may use and its upstream (`xoauth2`, `graph` or `auto`; the bridge's default when it names none).
//! - [`guard`]: failed sign-ins back off per address and per account; the per-mailbox sending rate.
//! - [`route`]: one profile's upstreams, its rate, `auto`'s remembered fallback, its status; delivery of one
//!   message in an account's mode, and the audit line's `upstream` (which one carried it).
//! - [`upstream`]: the XOAUTH2 relay and the wording of its failures for the device.
//! - [`spool`]: spool mode — `250` only once a message is fsynced to the spool directory; [`worker`]
//!   delivers in the background with retries, pacing and dead letters, each with a [`dsn`] to the sender.
//! - [`status`]: the status file the running bridge rewrites for `bridge status`.
//! - [`graph`]: the Graph upstream (the MIME as received up to 3 MB, envelope-only recipients as `Bcc:`;
//!   larger messages rebuilt as a draft with upload sessions — not byte-identical).
//! - [`service`]: the SMTP driver around `m365mail_proto::smtp::server` in its relay role, served by
//!   `m365mail_server`'s accept loop with its bounds.
//! - [`tls`]: the operator's certificate or a generated one.

pub mod accounts;
pub mod dsn;
pub mod graph;
pub mod guard;
pub mod route;
pub mod service;
pub mod spool;
pub mod status;
pub mod tls;
pub mod upstream;
pub mod worker;

use std::path::PathBuf;

use crate::error::{Classified, ErrorClass};

/// A bridge setup or administration failure (serving failures are SMTP replies and audit lines).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A value given by the operator is not usable.
    #[error("{0}")]
    Input(String),
    /// The accounts file cannot be read or written.
    #[error("bridge accounts file {path}: {detail}")]
    Accounts {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A listener's certificate or key cannot be used.
    #[error("bridge certificate {path}: {detail}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The spool directory cannot be used.
    #[error("bridge spool {path}: {detail}")]
    Spool {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A listener cannot be bound.
    #[error("cannot listen on {address}: {detail}")]
    Listen {
        /// The address.
        address: String,
        /// The system's reason.
        detail: String,
    },
}

impl Classified for BridgeError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Input(_) => ErrorClass::Input,
            Self::Accounts { .. }
            | Self::Certificate { .. }
            | Self::Listen { .. }
            | Self::Spool { .. } => ErrorClass::Config,
        }
    }

    fn cause(&self) -> String {
        match self {
            Self::Input(detail) => detail.clone(),
            Self::Accounts { detail, .. } => format!("the accounts file is not usable: {detail}"),
            Self::Certificate { detail, .. } => {
                format!("the TLS certificate or key is not usable: {detail}")
            }
            Self::Listen { detail, .. } => format!("the address cannot be bound: {detail}"),
            Self::Spool { detail, .. } => format!("the spool cannot be used: {detail}"),
        }
    }

    fn remedy(&self) -> String {
        match self {
            Self::Input(_) => "correct the value and run the command again".into(),
            Self::Accounts { path, .. } => format!(
                "fix or remove {} (m365mail bridge client add creates it again, 0600)",
                path.display()
            ),
            Self::Certificate { .. } => {
                "give a PEM certificate chain and its PEM private key, or neither to let the bridge \
                 generate one"
                    .into()
            }
            Self::Listen { .. } => {
                "choose a free port (below 1024 needs privileges), or stop what holds it".into()
            }
            Self::Spool { path, .. } => format!(
                "give [bridge.spool] dir a directory this user can write (it is created 0700), and run one \
                 bridge per spool; check {}",
                path.display()
            ),
        }
    }
}
