//! Entra's error JSON (reference §4.1) and a constructor for every AADSTS code the sandbox emits.
//!
//! Texts follow Microsoft's published wording where known; clients must branch on `error_codes` and
//! `error`, never on the text.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{clock::Clock, identity::crypto::random_guid};

/// An Entra error answer, rendered with trace ids and a timestamp by [`EntraError::into_response_at`].
#[derive(Debug, Clone)]
pub(crate) struct EntraError {
    pub(crate) status: StatusCode,
    /// OAuth `error` value.
    pub(crate) error: &'static str,
    /// The AADSTS code; `None` for the device-flow answers Entra sends without one (`slow_down`,
    /// `authorization_declined`).
    pub(crate) code: Option<u32>,
    pub(crate) message: String,
    pub(crate) suberror: Option<&'static str>,
    /// Rarely present fields, boxed to keep `Result<_, EntraError>` small.
    pub(crate) extras: Option<Box<ErrorExtras>>,
}

/// Fields only some answers carry.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorExtras {
    /// A Conditional Access claims challenge.
    pub(crate) claims: Option<String>,
    /// With `user_password_expired`.
    pub(crate) password_change_url: Option<String>,
    /// Seconds for a `Retry-After` header (throttling).
    pub(crate) retry_after_seconds: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    error_codes: Vec<u32>,
    timestamp: String,
    trace_id: String,
    correlation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suberror: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_change_url: Option<&'a str>,
}

impl EntraError {
    fn new(status: StatusCode, error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code: Some(code),
            message: message.into(),
            suberror: None,
            extras: None,
        }
    }

    fn bad_request(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, code, message)
    }

    fn invalid_client(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    }

    fn with_suberror(mut self, suberror: &'static str) -> Self {
        self.suberror = Some(suberror);
        self
    }

    /// `AADSTS<code>: <message>` (just the message for the answers without a code): the start of
    /// `error_description`, and the text the HTML pages and redirects show.
    pub(crate) fn described(&self) -> String {
        match self.code {
            Some(code) => format!("AADSTS{code}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// The JSON body with a fresh trace id and the given clock's timestamp.
    pub(crate) fn into_response_at(self, clock: &dyn Clock) -> Response {
        self.into_response_correlated(clock, None)
    }

    /// As [`EntraError::into_response_at`], with the client's `client-request-id` as the correlation
    /// id, as Entra does.
    pub(crate) fn into_response_correlated(
        self,
        clock: &dyn Clock,
        client_request_id: Option<&str>,
    ) -> Response {
        let description = self.described();
        let extras = self.extras.map(|extras| *extras).unwrap_or_default();
        let timestamp = format_timestamp(clock.unix_seconds());
        let trace_id = random_guid();
        let correlation_id = client_request_id.map_or_else(random_guid, str::to_string);
        let body = ErrorBody {
            error: self.error,
            error_description: format!(
                "{description}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
            ),
            error_codes: self.code.into_iter().collect(),
            timestamp,
            trace_id,
            correlation_id,
            error_uri: self
                .code
                .map(|code| format!("https://login.microsoftonline.com/error?code={code}")),
            suberror: self.suberror,
            claims: extras.claims.as_deref(),
            password_change_url: extras.password_change_url.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = extras.retry_after_seconds {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }

    // ---- injected faults (admin API) ------------------------------------------------------------

    pub(crate) fn throttled(retry_after_seconds: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            90055,
            "There are too many incoming requests. The request was throttled; retry after the delay in the Retry-After header.",
        );
        error.extras = Some(Box::new(ErrorExtras {
            retry_after_seconds: Some(retry_after_seconds),
            ..ErrorExtras::default()
        }));
        error
    }

    pub(crate) fn temporarily_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            50033,
            "A transient error has occurred. Please try again.",
        )
    }

    pub(crate) fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            90006,
            "An external server returned a retryable error. Please try again.",
        )
    }

    // ---- request shape -------------------------------------------------------------------------

    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub(crate) fn duplicated_parameter(name: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            9000411,
            format!("The request is not properly formatted. The parameter '{name}' is duplicated."),
        )
    }

    pub(crate) fn post_only(method: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            900561,
            format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."
            ),
        )
    }

    pub(crate) fn unsupported_grant_type(grant_type: &str) -> Self {
        Self::bad_request(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_request", 9002313, message)
    }

    /// A request body over [`crate::MAX_REQUEST_BODY_BYTES`]: HTTP 413 with the malformed-request
    /// code (Entra documents none for this).
    pub(crate) fn request_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            9002313,
            format!(
                "The request body is larger than {limit} bytes, the most the endpoint accepts."
            ),
        )
    }

    // ---- tenant ------------------------------------------------------------------------------

    pub(crate) fn tenant_not_found(tenant: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    pub(crate) fn grant_not_supported_on_endpoint(alias: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            9001023,
            format!(
                "The grant type is not supported over the /{alias} endpoint. Please see https://aka.ms/azureadv2 for details on which grants are supported; use the /organizations or tenant-specific endpoint."
            ),
        )
    }

    pub(crate) fn tenant_required(alias: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            9001023,
            format!(
                "The client credentials grant needs a tenant: it is not supported over the /{alias} endpoint. Use the tenant ID or a verified domain."
            ),
        )
    }

    // ---- application ---------------------------------------------------------------------------

    pub(crate) fn app_not_found(client_id: &str, directory: &str) -> Self {
        Self::bad_request(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{directory}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub(crate) fn app_disabled(client_id: &str, display_name: &str) -> Self {
        Self::bad_request(
            "unauthorized_client",
            7000112,
            format!("Application '{client_id}'({display_name}) is disabled."),
        )
    }

    /// AADSTS7000229: client credentials for an app registration without a service principal in the
    /// tenant (created through Graph, `POST /servicePrincipals` not yet done). The code is Entra's for
    /// "service-principal-less" sign-ins (microsoft.md §9.4); the wording is the sandbox's.
    pub(crate) fn missing_service_principal(client_id: &str, tenant: &str) -> Self {
        Self::bad_request(
            "invalid_client",
            7000229,
            format!(
                "The client application {client_id} is missing service principal in the tenant {tenant}."
            ),
        )
    }

    pub(crate) fn credential_required() -> Self {
        Self::invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    }

    pub(crate) fn public_client_with_credential() -> Self {
        Self::invalid_client(
            700025,
            "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
        )
    }

    pub(crate) fn invalid_secret(client_id: &str) -> Self {
        Self::invalid_client(
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )
    }

    pub(crate) fn expired_secret(client_id: &str) -> Self {
        Self::invalid_client(
            7000222,
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
            ),
        )
    }

    pub(crate) fn assertion_key_not_found(thumbprint: &str) -> Self {
        Self::invalid_client(
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}'. Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app.]"
            ),
        )
    }

    pub(crate) fn assertion_bad_signature() -> Self {
        Self::invalid_client(
            700027,
            "Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value.]",
        )
    }

    pub(crate) fn assertion_out_of_time_range(now: u64, not_before: u64, expires: u64) -> Self {
        Self::invalid_client(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                format_timestamp(now),
                format_timestamp(not_before),
                format_timestamp(expires)
            ),
        )
    }

    pub(crate) fn assertion_invalid(reason: &str) -> Self {
        Self::invalid_client(50012, reason.to_string())
    }

    /// A `jti` seen before (only when the sandbox refuses replays). Entra documents no dedicated
    /// code; the sandbox uses AADSTS50012 (invalid assertion).
    pub(crate) fn assertion_replayed() -> Self {
        Self::invalid_client(
            50012,
            "Client assertion has already been used: its 'jti' was seen before. Build a new assertion with a fresh 'jti' for every request.",
        )
    }

    pub(crate) fn assertion_wrong_client(client_id: &str) -> Self {
        Self::invalid_client(
            700021,
            format!(
                "Client assertion application identifier doesn't match 'client_id' parameter '{client_id}'."
            ),
        )
    }

    // ---- scope and resource ----------------------------------------------------------------------

    pub(crate) fn scope_not_default(scope: &str) -> Self {
        Self::bad_request(
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        )
    }

    pub(crate) fn invalid_scope(scope: &str) -> Self {
        Self::bad_request(
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        )
    }

    pub(crate) fn multiple_resources(scope: &str) -> Self {
        Self::bad_request(
            "invalid_scope",
            700022,
            format!(
                "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
            ),
        )
    }

    pub(crate) fn resource_not_found(resource: &str, tenant: &str) -> Self {
        Self::bad_request(
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub(crate) fn consent_required(client_id: &str, display_name: &str) -> Self {
        Self::bad_request(
            "invalid_grant",
            65001,
            format!(
                "The user or administrator has not consented to use the application with ID '{client_id}' named '{display_name}'. Send an interactive authorization request for this user and resource."
            ),
        )
        .with_suberror("consent_required")
    }

    pub(crate) fn admin_consent_required() -> Self {
        Self::bad_request(
            "permission_denied",
            90094,
            "The grant requires admin permission. Only an administrator can grant consent for the whole organization.",
        )
    }

    pub(crate) fn resource_not_required(resource: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            650057,
            format!(
                "Invalid resource. The client has requested access to a resource which isn't listed in the requested permissions in the client's application registration. Resource value from request: {resource}."
            ),
        )
    }

    // ---- user ------------------------------------------------------------------------------------

    pub(crate) fn bad_credentials() -> Self {
        Self::bad_request(
            "invalid_grant",
            50126,
            "Error validating credentials due to invalid username or password.",
        )
    }

    pub(crate) fn user_not_found(tenant: &str) -> Self {
        Self::bad_request(
            "invalid_grant",
            50034,
            format!(
                "The user account {{EmailHidden}} does not exist in the {tenant} directory. To sign into this application, the account must be added to the directory."
            ),
        )
    }

    pub(crate) fn user_disabled() -> Self {
        Self::bad_request("invalid_grant", 50057, "The user account is disabled.")
    }

    pub(crate) fn user_locked() -> Self {
        Self::bad_request(
            "invalid_grant",
            50053,
            "Your account is locked because you've tried to sign in too many times with an incorrect user ID or password.",
        )
    }

    pub(crate) fn password_expired(base_url: &str) -> Self {
        let mut error = Self::bad_request("invalid_grant", 50055, "The password is expired.")
            .with_suberror("user_password_expired");
        error.extras = Some(Box::new(ErrorExtras {
            password_change_url: Some(format!("{base_url}ChangePassword.aspx")),
            ..ErrorExtras::default()
        }));
        error
    }

    pub(crate) fn mfa_required(resource_app_id: &str) -> Self {
        let mut error = Self::bad_request(
            "invalid_grant",
            50076,
            format!(
                "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{resource_app_id}'."
            ),
        )
        .with_suberror("basic_action");
        error.extras = Some(Box::new(ErrorExtras {
            claims: Some(
                r#"{"access_token":{"capolids":{"essential":true,"values":["5a3b6c1d-0000-4000-8000-00000000f0a0"]}}}"#
                    .to_string(),
            ),
            ..ErrorExtras::default()
        }));
        error
    }

    pub(crate) fn login_required() -> Self {
        Self::bad_request(
            "login_required",
            50058,
            "A silent sign-in request was sent but no user is signed in.",
        )
    }

    // ---- refresh tokens and codes ---------------------------------------------------------------

    pub(crate) fn invalid_refresh_token() -> Self {
        Self::bad_request(
            "invalid_grant",
            70000,
            "The provided value for the input parameter 'refresh_token' or 'assertion' is not valid.",
        )
    }

    pub(crate) fn refresh_token_expired() -> Self {
        Self::bad_request(
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. The token was issued on a date before the configured inactivity period.",
        )
    }

    pub(crate) fn grant_revoked() -> Self {
        Self::bad_request(
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
        )
    }

    pub(crate) fn redirect_uri_mismatch(redirect_uri: &str, client_id: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal."
            ),
        )
    }

    pub(crate) fn no_reply_address(client_id: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            900971,
            format!(
                "No reply address provided. The application '{client_id}' has no redirect URI registered."
            ),
        )
    }

    pub(crate) fn pkce_mismatch() -> Self {
        Self::bad_request(
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        )
    }

    pub(crate) fn code_already_redeemed() -> Self {
        Self::bad_request(
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        )
    }

    pub(crate) fn code_redeemed_against_wrong_tenant() -> Self {
        Self::bad_request(
            "invalid_grant",
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        )
    }

    pub(crate) fn invalid_authorization_code() -> Self {
        Self::bad_request(
            "invalid_grant",
            70000,
            "The provided value for the input parameter 'code' is not valid.",
        )
    }

    pub(crate) fn authorization_code_expired() -> Self {
        Self::bad_request(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        )
    }

    // ---- device flow -----------------------------------------------------------------------------

    pub(crate) fn authorization_pending() -> Self {
        Self::bad_request(
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        )
    }

    pub(crate) fn slow_down() -> Self {
        Self {
            code: None,
            ..Self::bad_request(
                "slow_down",
                0,
                "The client is polling too quickly and should back off. Increase the polling interval by 5 seconds.",
            )
        }
    }

    pub(crate) fn authorization_declined() -> Self {
        Self {
            code: None,
            ..Self::bad_request(
                "authorization_declined",
                0,
                "The end user denied the authorization request.",
            )
        }
    }

    pub(crate) fn bad_verification_code() -> Self {
        Self::bad_request(
            "bad_verification_code",
            70018,
            "Invalid verification code entered. The device code sent is not recognised.",
        )
    }

    pub(crate) fn device_code_expired() -> Self {
        Self::bad_request("expired_token", 70019, "Verification code expired.")
    }

    pub(crate) fn device_code_already_used() -> Self {
        Self::bad_request(
            "invalid_grant",
            90120,
            "The device authorization request was already authorized or declined; start a new device flow.",
        )
    }
}

/// `2016-01-09 02:02:12Z`, Entra's timestamp format, from Unix seconds.
pub(crate) fn format_timestamp(unix_seconds: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(unix_seconds).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::format_timestamp;

    #[test]
    fn timestamps_use_entra_format() {
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_timestamp(1_452_304_932), "2016-01-09 02:02:12Z");
        assert_eq!(format_timestamp(1_709_251_199), "2024-02-29 23:59:59Z");
    }
}
