//! Minting access tokens (v1 shape, like Exchange Online's), ID tokens, refresh tokens and the token
//! response (reference §3).

use serde_json::{Map, Value, json};

use crate::{
    identity::state::{IdentityState, RefreshGrant},
    identity::{
        crypto::{b64url, random_url_safe},
        errors::EntraError,
        scopes::{DelegatedScopes, ResourceSelection, response_scope},
    },
    sync::lock,
    tenant::{AppRegistration, Tenant, User},
};

/// How the client proved itself; becomes `appidacr` (0 public, 1 secret, 2 certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuthMethod {
    Public,
    Secret,
    Certificate,
}

impl ClientAuthMethod {
    fn appidacr(self) -> &'static str {
        match self {
            Self::Public => "0",
            Self::Secret => "1",
            Self::Certificate => "2",
        }
    }
}

fn sign(state: &IdentityState, claims: &Value) -> Result<String, EntraError> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.typ = Some("JWT".into());
    header.kid = Some(state.signing_key.x5t.clone());
    header.x5t = Some(state.signing_key.x5t.clone());
    jsonwebtoken::encode(&header, claims, &state.signing_key.encoding_key).map_err(|error| {
        tracing::error!(%error, "signing a token failed");
        EntraError::invalid_request("The sandbox could not sign the token.")
    })
}

/// A random `uti`: makes every token distinct even when minted in the same second.
fn unique_token_id() -> String {
    random_url_safe(22)
}

/// The claims every access token has; `lifetime` in seconds (drawn once per token response, so
/// `exp` and `expires_in` agree).
fn base_claims(
    state: &IdentityState,
    tenant: &Tenant,
    audience: &str,
    app: &AppRegistration,
    lifetime: u64,
) -> Map<String, Value> {
    let now = state.now_unix();
    let expires = now.saturating_add(lifetime);
    let mut claims = Map::new();
    claims.insert("aud".into(), json!(audience));
    claims.insert(
        "iss".into(),
        json!(format!("https://sts.windows.net/{}/", tenant.id)),
    );
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(expires));
    claims.insert("tid".into(), json!(tenant.id));
    claims.insert("appid".into(), json!(app.client_id));
    claims.insert("app_displayname".into(), json!(app.display_name));
    claims.insert("ver".into(), json!("1.0"));
    claims.insert("uti".into(), json!(unique_token_id()));
    claims
}

fn token_response(
    scope: Option<String>,
    access_token: String,
    lifetime: u64,
) -> Map<String, Value> {
    let mut response = Map::new();
    response.insert("token_type".into(), json!("Bearer"));
    if let Some(scope) = scope {
        response.insert("scope".into(), json!(scope));
    }
    response.insert("expires_in".into(), json!(lifetime));
    response.insert("ext_expires_in".into(), json!(lifetime));
    response.insert("access_token".into(), json!(access_token));
    response
}

/// Client credentials: an app-only token with the granted roles of the resource. Like Entra, an app
/// without granted roles still gets a token, just without a `roles` claim.
pub(crate) fn issue_app_only(
    state: &IdentityState,
    tenant: &Tenant,
    app: &AppRegistration,
    selection: &ResourceSelection,
    method: ClientAuthMethod,
) -> Result<Value, EntraError> {
    let lifetime = state.access_token_seconds();
    let mut claims = base_claims(state, tenant, &selection.audience, app, lifetime);
    let service_principal = app.service_principal_id().unwrap_or(&app.client_id);
    claims.insert("oid".into(), json!(service_principal));
    claims.insert("sub".into(), json!(service_principal));
    claims.insert("idtyp".into(), json!("app"));
    claims.insert("appidacr".into(), json!(method.appidacr()));
    let roles = app.granted_roles(&selection.resource.app_id);
    if !roles.is_empty() {
        claims.insert("roles".into(), json!(roles));
    }
    let access_token = sign(state, &Value::Object(claims))?;
    Ok(Value::Object(token_response(None, access_token, lifetime)))
}

/// Everything a delegated token response needs.
pub(crate) struct DelegatedIssue<'a> {
    pub(crate) tenant: &'a Tenant,
    pub(crate) app: &'a AppRegistration,
    pub(crate) user: &'a User,
    pub(crate) scopes: &'a DelegatedScopes,
    /// Consented scope names of the resource (already checked).
    pub(crate) granted: Vec<String>,
    /// The scope string to remember with the refresh token.
    pub(crate) requested_scope: &'a str,
    pub(crate) client_info: bool,
    pub(crate) nonce: Option<&'a str>,
    pub(crate) method: ClientAuthMethod,
    /// Whether MFA was performed (interactive sign-in of an MFA user): `amr` gets `mfa`.
    pub(crate) mfa_performed: bool,
}

/// A delegated token response: access token, plus a refresh token when `offline_access` was asked
/// for, an ID token when `openid` was, and `client_info` when the client sent `client_info=1`.
pub(crate) fn issue_delegated(
    state: &IdentityState,
    issue: DelegatedIssue<'_>,
) -> Result<Value, EntraError> {
    let DelegatedIssue {
        tenant,
        app,
        user,
        scopes,
        granted,
        requested_scope,
        client_info,
        nonce,
        method,
        mfa_performed,
    } = issue;
    let lifetime = state.access_token_seconds();
    let mut claims = base_claims(state, tenant, &scopes.selection.audience, app, lifetime);
    // The ID token is issued at the same instant as the access token (one clock read, not two: two reads
    // can straddle a second and give the two tokens different `exp`s).
    let issued_at = claims["iat"].as_u64().unwrap_or_else(|| state.now_unix());
    claims.insert("oid".into(), json!(user.object_id));
    // Entra's `sub` is pairwise per app; a digest of user and app keeps that property.
    let subject = b64url(&crate::identity::crypto::sha256(
        format!("{}:{}", user.object_id, app.client_id).as_bytes(),
    ));
    claims.insert("sub".into(), json!(subject));
    claims.insert("upn".into(), json!(user.upn));
    claims.insert("unique_name".into(), json!(user.upn));
    claims.insert("name".into(), json!(user.display_name));
    claims.insert("scp".into(), json!(granted.join(" ")));
    claims.insert("idtyp".into(), json!("user"));
    claims.insert("appidacr".into(), json!(method.appidacr()));
    let amr = if mfa_performed {
        json!(["pwd", "mfa"])
    } else {
        json!(["pwd"])
    };
    claims.insert("amr".into(), amr);
    let access_token = sign(state, &Value::Object(claims))?;

    let scope = response_scope(&scopes.selection, &granted, &scopes.oidc);
    let mut response = token_response(Some(scope), access_token, lifetime);

    if scopes.wants("offline_access") {
        let refresh_token = format!("1.AV{}", random_url_safe(120));
        lock(&state.grants).refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                user_object_id: user.object_id.clone(),
                user_upn: user.upn.clone(),
                tenant_id: tenant.id.clone(),
                client_id: app.client_id.clone(),
                scope: requested_scope.to_string(),
                expires_at: state.unix_after(state.lifetimes.refresh_token),
                revoked: false,
                mfa_performed,
            },
        );
        response.insert("refresh_token".into(), json!(refresh_token));
    }
    if scopes.wants("openid") {
        let now = issued_at;
        let mut id_claims = Map::new();
        id_claims.insert("aud".into(), json!(app.client_id));
        id_claims.insert(
            "iss".into(),
            json!(format!("{}{}/v2.0", state.base(), tenant.id)),
        );
        id_claims.insert("iat".into(), json!(now));
        id_claims.insert("nbf".into(), json!(now));
        id_claims.insert("exp".into(), json!(now.saturating_add(lifetime)));
        id_claims.insert("name".into(), json!(user.display_name));
        id_claims.insert("oid".into(), json!(user.object_id));
        id_claims.insert("preferred_username".into(), json!(user.upn));
        id_claims.insert("sub".into(), json!(subject));
        id_claims.insert("tid".into(), json!(tenant.id));
        id_claims.insert("ver".into(), json!("2.0"));
        id_claims.insert("uti".into(), json!(unique_token_id()));
        if scopes.wants("email") {
            id_claims.insert("email".into(), json!(user.upn));
        }
        if let Some(nonce) = nonce {
            id_claims.insert("nonce".into(), json!(nonce));
        }
        response.insert(
            "id_token".into(),
            json!(sign(state, &Value::Object(id_claims))?),
        );
    }
    if client_info {
        let info = json!({ "uid": user.object_id, "utid": tenant.id }).to_string();
        response.insert("client_info".into(), json!(b64url(info.as_bytes())));
    }
    Ok(Value::Object(response))
}
