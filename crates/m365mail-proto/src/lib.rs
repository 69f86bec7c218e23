//! Sans-I/O protocol cores for m365mail: no sockets, no tokio, no clock reads — bytes in, events and bytes
//! out. The connector (`m365mail`) and the sandbox (`m365mail-sandbox`) both depend on this crate, and each
//! wraps a core in one small tokio driver of its own.
//!
//! - [`xoauth2`]: the SASL XOAUTH2 initial response (`user=…^Aauth=Bearer …^A^A`, base64), built by clients
//!   and parsed by servers.
//! - [`line`]: CRLF line framing with a length bound, for the line-oriented protocols (POP3, SMTP, IMAP
//!   commands).
//! - [`imap`]: the IMAP server core on imap-next, and a message's MIME structure (BODYSTRUCTURE, sections).
//! - [`pop3`]: the POP3 server core (the sandbox's service) and client core (the connector's reader).
//! - [`smtp`]: the SMTP submission server core (Exchange's §7.6 lines).
//! - [`fault`]: faults a test server injects into a session (a command refused, the connection dropped).
//! - [`transcript`]: golden `C:`/`S:` transcripts replayed against a core, byte for byte, whole and one byte
//!   at a time.
//!
//! Why a shared crate does not let a bug hide: a client core and a server core that share a codec could
//! agree on the same mistake. So each side is also checked against peers nobody here wrote — our clients
//! against Dovecot and Postfix, our servers against Python's imaplib/poplib/smtplib and curl — and the
//! transcripts quote Exchange's lines from the protocol reference, not from our own output.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fault;
pub mod imap;
pub mod line;
pub mod pop3;
pub mod smtp;
pub mod transcript;
pub mod xoauth2;
