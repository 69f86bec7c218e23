//! Device authorization: `POST /{tenant}/oauth2/v2.0/devicecode` and the `/devicelogin` page where a
//! user approves or declines a code.
//!
//! The page is plain HTML so tests can act as the browser: `POST /devicelogin` with the form fields
//! `user_code`, `username`, `password` and `action` (`approve` or `decline`; declining needs only the
//! user code). Success answers 200, failures 400 with the AADSTS code in the page text.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use serde_json::json;

use crate::{
    SandboxError,
    identity::state::{DeviceGrant, DeviceState, IdentityState, normalize_user_code},
    identity::{
        TenantAlias, add_token_headers, client_request_id,
        crypto::{random_url_safe, random_user_code},
        error_paragraph,
        errors::EntraError,
        html_escape, parse_form,
        scopes::parse_delegated,
        signin::{SignInKind, check_sign_in, sign_in_with_password},
    },
    sync::lock,
    tenant::TenantModel,
};

/// Starts a device flow.
pub(crate) async fn device_code(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    state.count_endpoint("devicecode");
    let request_id = client_request_id(&headers);
    let mut response = match start_device_flow(&state, &tenant_segment, &body) {
        Ok(response) => Json(response).into_response(),
        Err(error) => error.into_response_correlated(state.clock.as_ref(), request_id.as_deref()),
    };
    add_token_headers(&mut response, request_id.as_deref());
    response
}

fn start_device_flow(
    state: &IdentityState,
    tenant_segment: &str,
    body: &[u8],
) -> Result<serde_json::Value, EntraError> {
    let params = parse_form(body);
    params.refuse_duplicates()?;
    let directory = lock(&state.directory);
    let alias = TenantAlias::resolve(&directory, tenant_segment)?;
    let client_id = params.require("client_id")?;
    let scope = params.require("scope")?;
    let (tenant, app) = alias.enabled_app(&directory, client_id)?;
    // Validate the scope now, as Entra does, so a bad scope fails before the user is involved.
    parse_delegated(tenant, scope)?;

    let device_code = format!("DAQABAAEAAA{}", random_url_safe(100));
    let user_code = random_user_code();
    let expires_in = state.lifetimes.device_code.as_secs();
    let interval = state.lifetimes.device_poll_interval.as_secs();
    let verification_uri = format!("{}devicelogin", state.base());
    lock(&state.grants).device_codes.insert(
        device_code.clone(),
        DeviceGrant {
            user_code: user_code.clone(),
            client_id: app.client_id.clone(),
            tenant_id: match &alias {
                TenantAlias::Tenant(tenant_id) => Some(tenant_id.clone()),
                _ => None,
            },
            scope: scope.to_string(),
            expires_at: state.unix_after(state.lifetimes.device_code),
            state: DeviceState::Pending,
        },
    );
    Ok(json!({
        "user_code": user_code,
        "device_code": device_code,
        "verification_uri": verification_uri,
        "expires_in": expires_in,
        "interval": interval,
        "message": format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."
        ),
    }))
}

/// A decision on a pending device code, by the page or the admin API.
pub(crate) enum DeviceDecision<'a> {
    /// Approve as this user. `password` is checked when given (the page); the admin API approves
    /// without one, as an already signed-in user.
    Approve {
        upn: &'a str,
        password: Option<&'a str>,
    },
    Decline,
}

/// Why a decision was refused: the Entra error (shown on the page) and the admin-API error.
pub(crate) type Refusal = (EntraError, SandboxError);

fn refused(entra: EntraError, admin: SandboxError) -> Box<Refusal> {
    Box::new((entra, admin))
}

/// Applies a decision to a pending device code.
pub(crate) fn decide(
    state: &IdentityState,
    directory: &TenantModel,
    user_code: &str,
    decision: DeviceDecision<'_>,
) -> Result<(), Box<Refusal>> {
    let mut grants = lock(&state.grants);
    let now = state.now_unix();
    let grant = grants.device_by_user_code_mut(user_code).ok_or_else(|| {
        refused(
            EntraError::bad_verification_code(),
            SandboxError::not_found("device code", normalize_user_code(user_code)),
        )
    })?;
    if grant.expires_at <= now {
        return Err(refused(
            EntraError::device_code_expired(),
            SandboxError::Conflict("the device code has expired".into()),
        ));
    }
    if grant.state != DeviceState::Pending {
        return Err(refused(
            EntraError::device_code_already_used(),
            SandboxError::Conflict("the device code was already approved or declined".into()),
        ));
    }
    match decision {
        DeviceDecision::Decline => grant.state = DeviceState::Declined,
        DeviceDecision::Approve { upn, password } => {
            let (tenant, user) = directory.find_user(upn).ok_or_else(|| {
                refused(
                    EntraError::user_not_found(
                        grant.tenant_id.as_deref().unwrap_or("organizations"),
                    ),
                    SandboxError::not_found("user", upn),
                )
            })?;
            if let Some(tenant_id) = &grant.tenant_id
                && !tenant.id.eq_ignore_ascii_case(tenant_id)
            {
                return Err(refused(
                    EntraError::user_not_found(tenant_id),
                    SandboxError::Conflict(format!("{upn} is not in the flow's tenant")),
                ));
            }
            let resource_app_id = parse_delegated(tenant, &grant.scope)
                .map(|scopes| scopes.selection.resource.app_id)
                .unwrap_or_default();
            // The admin API signs in "as the user" without a password: account state still
            // applies, smart lockout (about presented passwords) does not.
            match password {
                Some(password) => sign_in_with_password(
                    state,
                    user,
                    password,
                    SignInKind::Interactive,
                    &resource_app_id,
                ),
                None => check_sign_in(
                    user,
                    &user.password,
                    SignInKind::Interactive,
                    &resource_app_id,
                    state.base(),
                ),
            }
            .map_err(|error| {
                let message = error.message.clone();
                (error, SandboxError::Conflict(message))
            })?;
            grant.state = DeviceState::Approved {
                upn: user.upn.clone(),
            };
        }
    }
    Ok(())
}

const PAGE_STYLE: &str =
    "body{font-family:sans-serif;max-width:30em;margin:3em auto}label{display:block;margin:.5em 0}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{PAGE_STYLE}</style></head>\n<body><h1>{title}</h1>\n{body}\n</body></html>\n",
        title = html_escape(title)
    )
}

fn login_form(message: Option<&str>) -> String {
    let message = error_paragraph(message);
    page(
        "Enter code",
        &format!(
            "{message}<form method=\"post\" action=\"/devicelogin\">\n\
             <label>Code <input name=\"user_code\" autocomplete=\"off\"></label>\n\
             <label>Username <input name=\"username\" type=\"email\"></label>\n\
             <label>Password <input name=\"password\" type=\"password\"></label>\n\
             <button name=\"action\" value=\"approve\">Sign in and approve</button>\n\
             <button name=\"action\" value=\"decline\">Decline</button>\n</form>"
        ),
    )
}

/// `GET /devicelogin`: the code entry form.
pub(crate) async fn login_page(State(state): State<Arc<IdentityState>>) -> Html<String> {
    state.count_endpoint("devicelogin");
    Html(login_form(None))
}

/// `POST /devicelogin`: approve or decline.
pub(crate) async fn login_submit(State(state): State<Arc<IdentityState>>, body: Bytes) -> Response {
    state.count_endpoint("devicelogin");
    let params = parse_form(&body);
    let Some(user_code) = params.get("user_code") else {
        return (
            StatusCode::BAD_REQUEST,
            Html(login_form(Some("Enter the code shown on your device."))),
        )
            .into_response();
    };
    let decision = match params.get("action").unwrap_or("approve") {
        "decline" => DeviceDecision::Decline,
        _ => match (params.get("username"), params.get("password")) {
            (Some(upn), Some(password)) => DeviceDecision::Approve {
                upn,
                password: Some(password),
            },
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    Html(login_form(Some("Enter your username and password."))),
                )
                    .into_response();
            }
        },
    };
    let declined = matches!(decision, DeviceDecision::Decline);
    let directory = lock(&state.directory);
    match decide(&state, &directory, user_code, decision) {
        Ok(()) if declined => Html(page(
            "Request declined",
            "<p id=\"result\">You declined the sign-in request. You may close this window.</p>",
        ))
        .into_response(),
        Ok(()) => Html(page(
            "Signed in",
            "<p id=\"result\">You have signed in on your device. You may now close this window.</p>",
        ))
        .into_response(),
        Err(refusal) => {
            let (error, _) = *refusal;
            (
                StatusCode::BAD_REQUEST,
                Html(login_form(Some(&error.described()))),
            )
                .into_response()
        }
    }
}
