//! `GET/POST /{tenant}/oauth2/v2.0/authorize`: the browser sign-in of the authorization code flow.
//!
//! `GET` with the usual query (`client_id`, `response_type=code`, `redirect_uri`, `scope`, `state`,
//! `code_challenge`, `code_challenge_method`, `nonce`, `response_mode`, `login_hint`) answers an HTML
//! form. The form posts every query parameter back as a hidden field together with `username` and
//! `password`. Tests act as the browser: they may skip the GET and POST the same fields directly.
//!
//! Like Entra, problems that make the redirect URI untrustworthy (unknown tenant or app, redirect URI
//! not registered: AADSTS50011) answer an error page (HTTP 400); everything else redirects to the
//! redirect URI with `error` and `error_description`. A wrong password re-displays the form (HTTP 200,
//! AADSTS50126 in the text).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use crate::{
    identity::state::{AuthorizationCodeGrant, IdentityState},
    identity::{
        FormParams, TenantAlias,
        crypto::random_url_safe,
        error_paragraph,
        errors::EntraError,
        hidden_fields, hidden_inputs, html_escape, parse_form,
        scopes::{consented_delegated_scopes, parse_delegated},
        signin::{SignInKind, find_user, sign_in_with_password},
    },
    sync::lock,
    tenant::{AppRegistration, TenantModel},
};

/// Parameters carried from the GET to the POST.
const CARRIED_PARAMETERS: [&str; 11] = [
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "response_mode",
    "login_hint",
    "prompt",
];

/// The outcome of validating an authorize request.
enum Rejection {
    /// Shown as a page: the redirect URI cannot be trusted.
    Page(EntraError),
    /// Sent back to the (validated) redirect URI.
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
    },
}

pub(crate) fn error_page(error: &EntraError) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign in</title></head><body>\n<h1>Sorry, but we're having trouble signing you in.</h1>\n<p id=\"error\">{}</p>\n</body></html>\n",
        html_escape(&error.described())
    );
    (StatusCode::BAD_REQUEST, Html(body)).into_response()
}

pub(crate) fn redirect_response(
    redirect_uri: &str,
    response_mode: Option<&str>,
    pairs: &[(&str, &str)],
) -> Response {
    if response_mode == Some("form_post") {
        let inputs = hidden_inputs(pairs.iter().copied());
        let body = format!(
            "<!DOCTYPE html>\n<html><body onload=\"document.forms[0].submit()\"><form method=\"post\" action=\"{}\">{inputs}</form></body></html>\n",
            html_escape(redirect_uri)
        );
        return Html(body).into_response();
    }
    let encoded: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().copied())
        .finish();
    let separator = if response_mode == Some("fragment") {
        "#"
    } else if redirect_uri.contains('?') {
        "&"
    } else {
        "?"
    };
    let location = format!("{redirect_uri}{separator}{encoded}");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

fn reject(rejection: Rejection, params: &FormParams) -> Response {
    match rejection {
        Rejection::Page(error) => error_page(&error),
        Rejection::Redirect {
            redirect_uri,
            error,
            description,
        } => error_redirect(
            &redirect_uri,
            params.get("response_mode"),
            error,
            &description,
            params,
        ),
    }
}

/// Sends `error` and `error_description` (and the request's `state`) back to a validated redirect URI.
pub(crate) fn error_redirect(
    redirect_uri: &str,
    response_mode: Option<&str>,
    error: &str,
    description: &str,
    params: &FormParams,
) -> Response {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if let Some(state) = params.get("state") {
        pairs.push(("state", state));
    }
    redirect_response(redirect_uri, response_mode, &pairs)
}

/// The app named by `client_id` as this endpoint sees it, and its `redirect_uri`, which must be one
/// the app registered. Errors here are shown on a page, never redirected (the redirect URI is not
/// trusted yet): AADSTS900144, 700016, 900971, 50011. Shared by authorize and admin consent.
pub(crate) fn app_and_redirect_uri<'model, 'params>(
    directory: &'model TenantModel,
    alias: &TenantAlias,
    params: &'params FormParams,
) -> Result<(&'model AppRegistration, &'params str), EntraError> {
    let client_id = params.require("client_id")?;
    let (_, app) = alias
        .find_app(directory, client_id)
        .ok_or_else(|| EntraError::app_not_found(client_id, alias.path_segment()))?;
    if app.redirect_uris.is_empty() {
        return Err(EntraError::no_reply_address(&app.client_id));
    }
    let redirect_uri = params.require("redirect_uri")?;
    if !app.accepts_redirect_uri(redirect_uri) {
        return Err(EntraError::redirect_uri_mismatch(
            redirect_uri,
            &app.client_id,
        ));
    }
    Ok((app, redirect_uri))
}

/// Validates everything but the user: returns the app and the redirect URI to use.
fn validate<'model>(
    directory: &'model TenantModel,
    tenant_segment: &str,
    params: &FormParams,
) -> Result<(TenantAlias, &'model AppRegistration, String), Rejection> {
    let alias = TenantAlias::resolve(directory, tenant_segment).map_err(Rejection::Page)?;
    let (app, redirect_uri) =
        app_and_redirect_uri(directory, &alias, params).map_err(Rejection::Page)?;
    let client_id = app.client_id.as_str();
    let redirect = |error: EntraError| Rejection::Redirect {
        redirect_uri: redirect_uri.to_string(),
        error: error.error,
        description: error.described(),
    };
    if !app.enabled {
        return Err(redirect(EntraError::app_disabled(
            &app.client_id,
            &app.display_name,
        )));
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(other) => {
            return Err(Rejection::Redirect {
                redirect_uri: redirect_uri.to_string(),
                error: "unsupported_response_type",
                description: format!(
                    "AADSTS700054: response_type '{other}' is not enabled for the application."
                ),
            });
        }
        None => return Err(redirect(EntraError::missing_parameter("response_type"))),
    }
    // The sandbox keeps no browser session, so a silent request never finds a signed-in user.
    if params.get("prompt") == Some("none") {
        return Err(redirect(EntraError::login_required()));
    }
    let scope = params.require("scope").map_err(redirect)?;
    let tenant_for_scopes = match &alias {
        TenantAlias::Tenant(tenant_id) => directory.tenant(tenant_id),
        _ => directory.find_app(client_id).map(|(tenant, _)| tenant),
    };
    if let Some(tenant) = tenant_for_scopes {
        parse_delegated(tenant, scope).map_err(redirect)?;
    }
    if params.get("code_challenge").is_some()
        && !matches!(
            params.get("code_challenge_method").unwrap_or("plain"),
            "S256" | "plain"
        )
    {
        return Err(redirect(EntraError::invalid_request(
            "The code_challenge_method is not supported. Use S256 or plain.",
        )));
    }
    Ok((alias, app, redirect_uri.to_string()))
}

fn sign_in_page(tenant_segment: &str, params: &FormParams, message: Option<&str>) -> String {
    let hidden = hidden_fields(&CARRIED_PARAMETERS, params);
    let message = error_paragraph(message);
    let login_hint = html_escape(params.get("login_hint").unwrap_or_default());
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign in to your account</title></head><body>\n\
         <h1>Sign in</h1>\n{message}<form method=\"post\" action=\"/{tenant}/oauth2/v2.0/authorize\">\n{hidden}\
         <label>Username <input name=\"username\" type=\"email\" value=\"{login_hint}\"></label>\n\
         <label>Password <input name=\"password\" type=\"password\"></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n</body></html>\n",
        tenant = html_escape(tenant_segment)
    )
}

/// `GET`: validates the request and shows the sign-in form.
pub(crate) async fn sign_in_form(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    state.count_endpoint("authorize");
    let params = parse_form(query.unwrap_or_default().as_bytes());
    let directory = lock(&state.directory);
    match validate(&directory, &tenant_segment, &params) {
        Ok(_) => Html(sign_in_page(&tenant_segment, &params, None)).into_response(),
        Err(rejection) => reject(rejection, &params),
    }
}

/// `POST`: checks the user and redirects with a code.
pub(crate) async fn sign_in_submit(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
    body: Bytes,
) -> Response {
    state.count_endpoint("authorize");
    let params = parse_form(&body);
    let directory = lock(&state.directory);
    let (alias, app, redirect_uri) = match validate(&directory, &tenant_segment, &params) {
        Ok(validated) => validated,
        Err(rejection) => return reject(rejection, &params),
    };
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        return Html(sign_in_page(
            &tenant_segment,
            &params,
            Some("Enter your username and password."),
        ))
        .into_response();
    };
    let redirect_error = |error: EntraError| {
        reject(
            Rejection::Redirect {
                redirect_uri: redirect_uri.clone(),
                error: error.error,
                description: error.described(),
            },
            &params,
        )
    };
    let (tenant, user) = match find_user(&directory, &alias, username) {
        Ok(found) => found,
        Err(error) => {
            return Html(sign_in_page(
                &tenant_segment,
                &params,
                Some(&error.described()),
            ))
            .into_response();
        }
    };
    let scope = params.get("scope").unwrap_or_default();
    let scopes = match parse_delegated(tenant, scope) {
        Ok(scopes) => scopes,
        Err(error) => return redirect_error(error),
    };
    if let Err(error) = sign_in_with_password(
        &state,
        user,
        password,
        SignInKind::Interactive,
        &scopes.selection.resource.app_id,
    ) {
        // Credential problems keep the user on the page, as Entra does.
        return Html(sign_in_page(
            &tenant_segment,
            &params,
            Some(&error.described()),
        ))
        .into_response();
    }
    // The sandbox has no consent prompt: missing consent goes back to the app as Entra's
    // `consent_required` answer with AADSTS65001.
    if let Err(error) = consented_delegated_scopes(app, &scopes.selection, &user.upn) {
        return reject(
            Rejection::Redirect {
                redirect_uri: redirect_uri.clone(),
                error: "consent_required",
                description: error.described(),
            },
            &params,
        );
    }
    let code = format!("1.AR{}", random_url_safe(160));
    let code_challenge = params.get("code_challenge").map(|challenge| {
        (
            challenge.to_string(),
            params
                .get("code_challenge_method")
                .unwrap_or("plain")
                .to_string(),
        )
    });
    lock(&state.grants).authorization_codes.insert(
        code.clone(),
        AuthorizationCodeGrant {
            client_id: app.client_id.clone(),
            tenant_id: tenant.id.clone(),
            user_upn: user.upn.clone(),
            redirect_uri: redirect_uri.clone(),
            scope: scope.to_string(),
            code_challenge,
            nonce: params.get("nonce").map(str::to_string),
            expires_at: state.unix_after(state.lifetimes.authorization_code),
            redeemed: false,
        },
    );
    let mut pairs = vec![("code", code.as_str())];
    if let Some(client_state) = params.get("state") {
        pairs.push(("state", client_state));
    }
    redirect_response(&redirect_uri, params.get("response_mode"), &pairs)
}
