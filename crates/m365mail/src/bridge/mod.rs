//! The local SMTP bridge: password-only devices and applications (printers, scanners, ERPs, scripts) submit
//! to it with a local username and password, and it relays each message byte for byte to Microsoft 365 over
//! SMTP with XOAUTH2, answering the device only once Microsoft 365 has answered.
//!
//! - [`accounts`]: local accounts (argon2id hashes, 0600 file), each mapped to a profile and the senders
//!   it may use.
//! - [`guard`]: failed sign-ins back off per address and per account; the per-mailbox sending rate.
//! - [`upstream`]: the XOAUTH2 relay and the wording of its failures for the device.
//! - [`service`]: the SMTP driver around `m365mail_proto::smtp::server` in its relay role, served by
//!   `m365mail_server`'s accept loop with its bounds.
//! - [`tls`]: the operator's certificate or a generated one.

pub mod accounts;
pub mod guard;
pub mod service;
pub mod tls;
pub mod upstream;

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
            Self::Accounts { .. } | Self::Certificate { .. } | Self::Listen { .. } => {
                ErrorClass::Config
            }
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
        }
    }
}
