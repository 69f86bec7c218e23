//! IMAP as Exchange Online speaks it (microsoft.md §7.4).
//!
//! - [`server`]: the server core on imap-next (the sandbox's IMAP service, later the local bridge).
//! - [`mutf7`]: modified UTF-7, the wire form of folder names.
//! - [`structure`]: a message's MIME structure (BODYSTRUCTURE and body sections).

mod envelope;
pub mod mutf7;
mod search;
pub mod server;
pub mod structure;
