//! `POST /_sandbox/introspect`: OAuth 2.0 token introspection (RFC 7662) for the sandbox's own tokens, so
//! that a real IMAP/POP3 server (Dovecot's `oauth2` passdb in introspection mode) can accept them. Always
//! 200 with JSON: `{"active": false}` for anything the bearer check refuses; for a token good for Exchange
//! Online IMAP, POP or SMTP, `active`, `username` (the user's UPN; app-only tokens have none, so Dovecot —
//! which sends only the token, not `user=` — cannot model app-only or shared-mailbox rights), `scope` (the
//! first of IMAP.AccessAsUser.All, POP.AccessAsUser.All, SMTP.Send — or the role — the token carries),
//! `client_id`, `token_type` and `exp`.

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
    for requirement in [Requirement::IMAP, Requirement::POP, Requirement::SMTP] {
        let Ok(principal) = state.check_bearer(&directory, token, requirement) else {
            continue;
        };
        let exp = super::bearer::token_expiry(token);
        return Json(match principal {
            Principal::User { upn, app_id, .. } => json!({
                "active": true, "username": upn, "scope": requirement.scope, "client_id": app_id,
                "token_type": "Bearer", "exp": exp,
            }),
            Principal::App { app_id, .. } => json!({
                "active": true, "scope": requirement.role, "client_id": app_id,
                "token_type": "Bearer", "exp": exp,
            }),
        });
    }
    Json(json!({ "active": false }))
}
