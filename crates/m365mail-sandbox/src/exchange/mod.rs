//! Exchange Online as the sandbox serves it: the mail store, who may open which mailbox, and the IMAP, POP3
//! and SMTP services (on [`m365mail_server`], each with its [`m365mail_proto`] core).

pub(crate) mod access;
pub(crate) mod imap;
pub(crate) mod pop3;
pub(crate) mod seed;
pub(crate) mod smtp;
pub(crate) mod store;

use std::sync::{Arc, Mutex};

use crate::{identity::state::IdentityState, sync, tenant::TenantModel};

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

    /// Delivers a submitted message as Exchange Online does, for every way of submitting (SMTP AUTH,
    /// Graph `sendMail`): each recipient with a mailbox in the tenant gets `message` in their Inbox (once,
    /// however often they are named), the others go to the outbox under `envelope_from` (nothing leaves
    /// the sandbox), and `sent_copy` — (mailbox, bytes), the sender's own copy, which may keep headers
    /// the recipients do not get, such as `Bcc:` — goes to that mailbox's Sent Items if it is one of the
    /// tenant's.
    pub(crate) fn submit(
        &self,
        envelope_from: &str,
        recipients: &[String],
        message: &[u8],
        sent_copy: Option<(&str, &[u8])>,
    ) {
        let now = i64::try_from(self.identity.clock.unix_seconds()).unwrap_or(i64::MAX);
        let mailboxes: Vec<String> = sync::lock(&self.directory)
            .tenants
            .iter()
            .flat_map(|t| t.mailboxes.iter().map(|m| m.address.to_ascii_lowercase()))
            .collect();
        let mut store = sync::lock(&self.store);
        let mut inside: Vec<String> = Vec::new();
        let mut outside: Vec<String> = Vec::new();
        for recipient in recipients {
            let lower = recipient.to_ascii_lowercase();
            if mailboxes.contains(&lower) {
                if !inside.contains(&lower) {
                    store.deliver(recipient, message, now);
                    inside.push(lower);
                }
            } else if !outside.iter().any(|o| o.eq_ignore_ascii_case(recipient)) {
                outside.push(recipient.clone());
            }
        }
        if !outside.is_empty() {
            store.send_out(envelope_from, outside, message);
        }
        if let Some((sender, copy)) = sent_copy
            && mailboxes.contains(&sender.to_ascii_lowercase())
        {
            let _ = store.deliver_to(sender, "Sent Items", copy, now);
        }
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
