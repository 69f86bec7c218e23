//! Entra ID endpoints: discovery, keys, token (every grant), device code, authorize and the sign-in pages.

pub(crate) mod adminconsent;
pub(crate) mod authorize;
pub(crate) mod bearer;
pub(crate) mod client_auth;
pub(crate) mod crypto;
pub(crate) mod devicecode;
pub(crate) mod discovery;
pub(crate) mod errors;
pub(crate) mod introspect;
pub(crate) mod scopes;
pub(crate) mod signin;
pub(crate) mod state;
pub(crate) mod token_endpoint;
pub(crate) mod token_fault;
pub(crate) mod tokens;

pub use token_fault::TokenFault;

use std::sync::Arc;

use axum::{
    Router,
    routing::{get, post},
};

use crate::{
    identity::state::IdentityState,
    tenant::{AppRegistration, Tenant, TenantModel},
};
use errors::EntraError;

/// The tenant id Microsoft uses for personal accounts (issuer of `consumers`).
pub(crate) const CONSUMERS_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// The identity routes. Paths are Entra's, with the `{tenant}` segment first.
pub(crate) fn router() -> Router<Arc<IdentityState>> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::keys))
        .route("/_sandbox/introspect", post(introspect::introspect))
        .route(
            "/common/discovery/instance",
            get(discovery::instance_discovery),
        )
        .route("/common/userrealm/{username}", get(discovery::user_realm))
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(token_endpoint::token).get(token_endpoint::token_with_wrong_method),
        )
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(devicecode::device_code),
        )
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize::sign_in_form).post(authorize::sign_in_submit),
        )
        .route(
            "/{tenant}/v2.0/adminconsent",
            get(adminconsent::v2_form).post(adminconsent::v2_submit),
        )
        .route(
            "/{tenant}/adminconsent",
            get(adminconsent::classic_form).post(adminconsent::classic_submit),
        )
        .route(
            "/devicelogin",
            get(devicecode::login_page).post(devicecode::login_submit),
        )
}

/// The device-code grant: RFC 8628's URN, or the short `device_code` some client libraries send
/// (Entra accepts both).
pub(crate) fn is_device_code_grant(grant_type: &str) -> bool {
    grant_type == token_endpoint::DEVICE_CODE_GRANT || grant_type == "device_code"
}

/// What the `{tenant}` URL segment named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TenantAlias {
    /// A tenant GUID or verified domain, resolved to the tenant id.
    Tenant(String),
    /// `organizations`: any work or school tenant.
    Organizations,
    /// `common`: work/school or personal accounts.
    Common,
    /// `consumers`: personal accounts only (none exist in the sandbox).
    Consumers,
}

impl TenantAlias {
    /// Resolves the segment; unknown names give AADSTS90002.
    pub(crate) fn resolve(model: &TenantModel, segment: &str) -> Result<Self, EntraError> {
        match segment.to_ascii_lowercase().as_str() {
            "organizations" => Ok(Self::Organizations),
            "common" => Ok(Self::Common),
            "consumers" => Ok(Self::Consumers),
            _ => model
                .tenant(segment)
                .map(|tenant| Self::Tenant(tenant.id.clone()))
                .ok_or_else(|| EntraError::tenant_not_found(segment)),
        }
    }

    /// The path segment endpoints advertise: the GUID for a tenant, the alias otherwise.
    pub(crate) fn path_segment(&self) -> &str {
        match self {
            Self::Tenant(id) => id,
            Self::Organizations => "organizations",
            Self::Common => "common",
            Self::Consumers => "consumers",
        }
    }

    pub(crate) fn is_multi_tenant(&self) -> bool {
        !matches!(self, Self::Tenant(_))
    }

    /// The app and its home tenant as an endpoint under this segment sees them: a tenant endpoint
    /// only its own apps, `organizations`/`common` any tenant's, `consumers` none (the sandbox has no
    /// personal-account apps).
    pub(crate) fn find_app<'model>(
        &self,
        directory: &'model TenantModel,
        client_id: &str,
    ) -> Option<(&'model Tenant, &'model AppRegistration)> {
        match self {
            Self::Tenant(tenant_id) => directory
                .tenant(tenant_id)
                .and_then(|tenant| tenant.app(client_id).map(|app| (tenant, app))),
            Self::Organizations | Self::Common => directory.find_app(client_id),
            Self::Consumers => None,
        }
    }

    /// [`Self::find_app`] for the token and device-code endpoints: an unknown app is AADSTS700016, a
    /// disabled one AADSTS7000112.
    pub(crate) fn enabled_app<'model>(
        &self,
        directory: &'model TenantModel,
        client_id: &str,
    ) -> Result<(&'model Tenant, &'model AppRegistration), EntraError> {
        let (tenant, app) = self
            .find_app(directory, client_id)
            .ok_or_else(|| EntraError::app_not_found(client_id, self.path_segment()))?;
        if !app.enabled {
            return Err(EntraError::app_disabled(&app.client_id, &app.display_name));
        }
        Ok((tenant, app))
    }
}

/// The client's `client-request-id` header when it is a GUID (Entra uses it as the correlation id and
/// echoes it back).
pub(crate) fn client_request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("client-request-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| uuid::Uuid::parse_str(value).ok())
        .map(|id| id.to_string())
}

/// Headers of every token-endpoint answer: tokens must not be cached (RFC 6749 §5.1), and the
/// client's request id comes back.
pub(crate) fn add_token_headers(
    response: &mut axum::response::Response,
    client_request_id: Option<&str>,
) {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(id) = client_request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert("client-request-id", id);
    }
}

/// HTML-escapes text for the sign-in pages.
pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Hidden `<input>`s carrying the named request parameters that are present through a page's form.
pub(crate) fn hidden_fields(names: &[&str], params: &FormParams) -> String {
    hidden_inputs(
        names
            .iter()
            .filter_map(|name| params.get(name).map(|value| (*name, value))),
    )
}

/// One hidden `<input>` per (name, value) pair.
pub(crate) fn hidden_inputs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                html_escape(name),
                html_escape(value)
            )
        })
        .collect()
}

/// The error paragraph of a page (empty without a message).
pub(crate) fn error_paragraph(message: Option<&str>) -> String {
    message
        .map(|message| {
            format!(
                "<p id=\"error\" role=\"alert\">{}</p>\n",
                html_escape(message)
            )
        })
        .unwrap_or_default()
}

/// Parses an `application/x-www-form-urlencoded` body (or query) into ordered pairs; the first
/// occurrence of a name wins, and the first name seen twice is remembered for
/// [`FormParams::refuse_duplicates`].
pub(crate) fn parse_form(body: &[u8]) -> FormParams {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut duplicated = None;
    for (name, value) in url::form_urlencoded::parse(body) {
        if !pairs.iter().any(|(existing, _)| *existing == name) {
            pairs.push((name.into_owned(), value.into_owned()));
        } else if duplicated.is_none() {
            duplicated = Some(name.into_owned());
        }
    }
    FormParams { pairs, duplicated }
}

/// Form or query parameters.
pub(crate) struct FormParams {
    pairs: Vec<(String, String)>,
    /// The first parameter name that appeared more than once.
    duplicated: Option<String>,
}

impl FormParams {
    /// The token and device-code endpoints refuse a parameter sent twice, as Entra does
    /// (AADSTS9000411), instead of picking one of the values.
    pub(crate) fn refuse_duplicates(&self) -> Result<(), EntraError> {
        match &self.duplicated {
            Some(name) => Err(EntraError::duplicated_parameter(name)),
            None => Ok(()),
        }
    }

    /// A non-empty parameter.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    /// A required parameter; missing gives AADSTS900144.
    pub(crate) fn require(&self, name: &str) -> Result<&str, EntraError> {
        self.get(name)
            .ok_or_else(|| EntraError::missing_parameter(name))
    }
}
