//! `POST /_sandbox/introspect`: OAuth 2.0 token introspection (RFC 7662) for the sandbox's own tokens, so
//! that a real IMAP/POP3 server (Dovecot's `oauth2` passdb in introspection mode) can accept them. Always
//! 200 with JSON: `{"active": false}` for anything the bearer check refuses; for a token good for Exchange
//! Online IMAP, POP or SMTP, `active`, `username` (the user's UPN; app-only tokens have none, so Dovecot —
//! which sends only the token, not `user=` — cannot model app-only or shared-mailbox rights), `scope` (every
//! one of IMAP.AccessAsUser.All, POP.AccessAsUser.All, SMTP.Send — or of the roles — the token carries,
//! space-separated as RFC 7662 has it, so that a per-protocol `scope` check in Dovecot passes a token good for
//! several protocols), `client_id`, `token_type` and `exp`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};

use super::bearer::{Principal, Requirement};
use super::state::IdentityState;
use crate::sync::lock;

pub(crate) async fn introspect(
    State(state): State<Arc<IdentityState>>,
    body: Bytes,
) -> Json<Value> {
    state.count_endpoint("introspect");
    let params = super::parse_form(&body);
    let Some(token) = params.get("token") else {
        return Json(json!({ "active": false }));
    };
    let directory = lock(&state.directory);
    let mut principal = None;
    let mut scopes = Vec::new();
    for requirement in [Requirement::IMAP, Requirement::POP, Requirement::SMTP] {
        let Ok(found) = state.check_bearer(&directory, token, requirement) else {
            continue;
        };
        scopes.push(match found {
            Principal::User { .. } => requirement.scope,
            Principal::App { .. } => requirement.role,
        });
        principal.get_or_insert(found);
    }
    let Some(principal) = principal else {
        return Json(json!({ "active": false }));
    };
    let scope = scopes.join(" ");
    let exp = super::bearer::token_expiry(token);
    Json(match principal {
        Principal::User { upn, app_id, .. } => json!({
            "active": true, "username": upn, "scope": scope, "client_id": app_id,
            "token_type": "Bearer", "exp": exp,
        }),
        Principal::App { app_id, .. } => json!({
            "active": true, "scope": scope, "client_id": app_id,
            "token_type": "Bearer", "exp": exp,
        }),
    })
}
