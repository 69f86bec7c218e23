//! SMTP submission as Exchange Online answers it (microsoft.md §7.6).
//!
//! - [`server`]: the sans-I/O server core (the sandbox's SMTP service next, later the local bridge).

pub mod server;
