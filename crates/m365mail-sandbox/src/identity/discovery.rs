//! Metadata endpoints: OpenID configuration, signing keys, instance discovery and user realm
//! (reference §1.3 and §1.5).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    identity::state::IdentityState,
    identity::{CONSUMERS_TENANT_ID, TenantAlias, errors::EntraError},
    sync::lock,
};

/// Entra's caching header on metadata.
const METADATA_CACHE_CONTROL: &str = "max-age=86400, private";

/// The `issuer` for an alias: the tenant's for a tenant, the `{tenantid}` template for
/// `common`/`organizations` (MSAL accepts it: it only validates issuers of OIDC authorities).
fn issuer(base: &str, alias: &TenantAlias) -> String {
    match alias {
        TenantAlias::Tenant(tenant_id) => format!("{base}{tenant_id}/v2.0"),
        TenantAlias::Consumers => format!("{base}{CONSUMERS_TENANT_ID}/v2.0"),
        TenantAlias::Organizations | TenantAlias::Common => format!("{base}{{tenantid}}/v2.0"),
    }
}

fn resolve(state: &IdentityState, tenant_segment: &str) -> Result<TenantAlias, EntraError> {
    TenantAlias::resolve(&lock(&state.directory), tenant_segment)
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub(crate) async fn openid_configuration(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
) -> Response {
    state.count_endpoint("openid-configuration");
    let alias = match resolve(&state, &tenant_segment) {
        Ok(alias) => alias,
        Err(error) => return error.into_response_at(state.clock.as_ref()),
    };
    let base = state.base();
    let endpoint = |path: &str| format!("{base}{}/{path}", alias.path_segment());
    let document = json!({
        "token_endpoint": endpoint("oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": endpoint("discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer(base, &alias),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}oidc/userinfo"),
        "authorization_endpoint": endpoint("oauth2/v2.0/authorize"),
        "device_authorization_endpoint": endpoint("oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": endpoint("oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": endpoint("kerberos"),
        "tenant_region_scope": "WW",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    });
    (
        [(header::CACHE_CONTROL, METADATA_CACHE_CONTROL)],
        Json(document),
    )
        .into_response()
}

/// `GET /{tenant}/discovery/v2.0/keys`: the JWKS with the one signing key.
pub(crate) async fn keys(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
) -> Response {
    state.count_endpoint("keys");
    let alias = match resolve(&state, &tenant_segment) {
        Ok(alias) => alias,
        Err(error) => return error.into_response_at(state.clock.as_ref()),
    };
    let key = &state.signing_key;
    let document = json!({
        "keys": [{
            "kty": "RSA",
            "use": "sig",
            "kid": key.x5t,
            "x5t": key.x5t,
            "n": key.modulus_b64url,
            "e": key.exponent_b64url,
            "x5c": [key.certificate_b64],
            "issuer": issuer(state.base(), &alias),
        }]
    });
    (
        [(header::CACHE_CONTROL, METADATA_CACHE_CONTROL)],
        Json(document),
    )
        .into_response()
}

/// `GET /common/discovery/instance`: the instance-discovery answer MSAL asks for when it has not been
/// told to skip it, naming this host as its own (only) alias.
pub(crate) async fn instance_discovery(
    State(state): State<Arc<IdentityState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.count_endpoint("instance-discovery");
    let host = match (state.base_url.host_str(), state.base_url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => String::new(),
    };
    // The tenant is the first path segment of the authorization endpoint being validated.
    let tenant = query
        .get("authorization_endpoint")
        .and_then(|endpoint| url::Url::parse(endpoint).ok())
        .and_then(|endpoint| {
            endpoint
                .path_segments()
                .and_then(|mut segments| segments.next().map(str::to_string))
        })
        .filter(|segment| !segment.is_empty())
        .unwrap_or_else(|| "common".to_string());
    Json(json!({
        "tenant_discovery_endpoint": format!("{}{tenant}/v2.0/.well-known/openid-configuration", state.base()),
        "api-version": "1.1",
        "metadata": [{
            "preferred_network": host,
            "preferred_cache": host,
            "aliases": [host],
        }],
    }))
    .into_response()
}

/// `GET /common/userrealm/{username}?api-version=1.0`: every sandbox domain is `Managed` (cloud
/// passwords), so MSAL goes on with a plain ROPC request; unknown domains are `Unknown`.
pub(crate) async fn user_realm(
    State(state): State<Arc<IdentityState>>,
    Path(username): Path<String>,
) -> Response {
    state.count_endpoint("userrealm");
    let domain = username
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .unwrap_or_default()
        .to_string();
    let known = lock(&state.directory).tenant(&domain).is_some();
    Json(json!({
        "ver": "1.0",
        "account_type": if known { "Managed" } else { "Unknown" },
        "domain_name": domain,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_audience_urn": "urn:federation:MicrosoftOnline",
    }))
    .into_response()
}
