//! IMAP as Exchange Online speaks it (microsoft.md §7.4).
//!
//! - [`server`]: the server core on imap-next (the sandbox's IMAP service, later the local bridge).
//! - [`structure`]: a message's MIME structure (BODYSTRUCTURE and body sections).

mod envelope;
mod search;
pub mod server;
pub mod structure;
