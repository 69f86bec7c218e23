//! End-to-end tests of the sandbox tenant over HTTPS, acting as clients and as the browser.

mod admin;
mod admin_consent;
mod auth_code;
mod bearer;
mod client_credentials;
mod common;
mod device_code;
mod discovery;
mod dovecot_introspect;
mod entra_golden;
mod graph;
mod graph_drafts;
mod graph_mail;
mod graph_python;
mod graph_send;
mod http;
mod imap;
mod listeners;
mod lockout;
mod mailboxes;
mod msal;
mod pop3;
mod refresh;
mod ropc;
mod smtp;
mod tenant_file;
