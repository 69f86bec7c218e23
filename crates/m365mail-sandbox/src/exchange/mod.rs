//! Exchange Online as the sandbox serves it: the mail store, who may open which mailbox, and the IMAP, POP3
//! and SMTP services (on [`m365mail_server`], each with its [`m365mail_proto`] core).

pub(crate) mod access;
pub(crate) mod imap;
pub(crate) mod pop3;
pub(crate) mod seed;
pub(crate) mod smtp;
pub(crate) mod store;

use std::sync::{Arc, Mutex};

use crate::{identity::state::IdentityState, tenant::TenantModel};

/// The Exchange service's state: the shared directory, the identity service (for bearer checks, and its
/// clock) and the messages.
pub(crate) struct ExchangeState {
    pub(crate) directory: Arc<Mutex<TenantModel>>,
    pub(crate) identity: Arc<IdentityState>,
    pub(crate) store: Mutex<store::MailStore>,
    /// Injected connection faults per mail service (`imap`, `pop3`, `smtp`), shared by its listeners.
    pub(crate) connection_faults:
        std::collections::HashMap<&'static str, Arc<m365mail_server::Faults>>,
    /// Injected session faults per mail service (the next command refused, a drop after N commands, a
    /// token expired early).
    pub(crate) session_faults: std::collections::HashMap<
        &'static str,
        crate::faults::FaultQueue<crate::faults::SessionFault>,
    >,
}

impl ExchangeState {
    /// The session-fault queue of `service` (`imap`, `pop3`, `smtp`).
    pub(crate) fn session_faults(
        &self,
        service: &str,
    ) -> &crate::faults::FaultQueue<crate::faults::SessionFault> {
        &self.session_faults[service]
    }
}

/// The mail service a listener belongs to, as the fault routes name it.
pub(crate) fn service_family(listener: &str) -> Option<&'static str> {
    match listener {
        "imap" | "imaps" => Some("imap"),
        "pop3" | "pop3s" => Some("pop3"),
        "smtp" | "smtps" => Some("smtp"),
        _ => None,
    }
}
