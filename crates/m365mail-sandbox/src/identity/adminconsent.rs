//! Admin consent (reference §1.1): `GET/POST /{tenant}/v2.0/adminconsent` (with `scope`, each
//! `{resource}/.default`) and the older `GET/POST /{tenant}/adminconsent` (everything the app requests).
//!
//! Like the authorize page, `GET` shows a form (`username`, `password`) that posts the query back. A
//! user with `global_admin` grants the app's requested permissions (`required_permissions`) tenant-wide:
//! delegated scopes as admin consent, application permissions as app roles. Success redirects to
//! `redirect_uri?tenant=<guid>&state=…&admin_consent=True` (the v2 form adds `scope`); failures redirect
//! with `error` and `error_description` (`permission_denied` for a non-admin), or show a page when the
//! redirect URI cannot be trusted.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    response::{Html, IntoResponse, Response},
};

use crate::{
    identity::state::IdentityState,
    identity::{
        FormParams, TenantAlias,
        authorize::{app_and_redirect_uri, error_page, error_redirect, redirect_response},
        error_paragraph,
        errors::EntraError,
        hidden_fields, html_escape, parse_form,
        signin::{SignInKind, find_user, sign_in_with_password},
    },
    sync::lock,
    tenant::{AppRoleGrant, DelegatedGrant, RequiredPermission, TenantModel},
};

/// Which of Entra's two admin-consent endpoints was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsentForm {
    /// `/{tenant}/v2.0/adminconsent`: consent for the resources named in `scope`.
    V2,
    /// `/{tenant}/adminconsent`: consent for everything the app requests.
    Classic,
}

impl ConsentForm {
    fn path(self, tenant_segment: &str) -> String {
        match self {
            Self::V2 => format!("/{tenant_segment}/v2.0/adminconsent"),
            Self::Classic => format!("/{tenant_segment}/adminconsent"),
        }
    }
}

const CARRIED_PARAMETERS: [&str; 4] = ["client_id", "redirect_uri", "scope", "state"];

/// The validated request: everything needed after sign-in.
struct ConsentRequest {
    alias: TenantAlias,
    client_id: String,
    redirect_uri: String,
    required: Vec<RequiredPermission>,
}

fn validate(
    directory: &TenantModel,
    tenant_segment: &str,
    params: &FormParams,
) -> Result<ConsentRequest, Box<EntraError>> {
    let alias = TenantAlias::resolve(directory, tenant_segment)?;
    let (app, redirect_uri) = app_and_redirect_uri(directory, &alias, params)?;
    Ok(ConsentRequest {
        alias,
        client_id: app.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        required: app.required_permissions.clone(),
    })
}

fn form_page(action: &str, params: &FormParams, message: Option<&str>) -> String {
    let hidden = hidden_fields(&CARRIED_PARAMETERS, params);
    let message = error_paragraph(message);
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Permissions requested</title></head><body>\n\
         <h1>Permissions requested: accept for your organization</h1>\n{message}<form method=\"post\" action=\"{action}\">\n{hidden}\
         <label>Username <input name=\"username\" type=\"email\"></label>\n\
         <label>Password <input name=\"password\" type=\"password\"></label>\n\
         <button type=\"submit\">Accept</button>\n</form>\n</body></html>\n",
        action = html_escape(action)
    )
}

fn redirect_error(request: &ConsentRequest, params: &FormParams, error: &EntraError) -> Response {
    error_redirect(
        &request.redirect_uri,
        None,
        error.error,
        &error.described(),
        params,
    )
}

/// The grants to add: per resource, the requested delegated scopes and app roles.
fn grants_for(
    form: ConsentForm,
    request: &ConsentRequest,
    directory: &TenantModel,
    tenant_id: &str,
    scope: Option<&str>,
) -> Result<Vec<RequiredPermission>, EntraError> {
    if form == ConsentForm::Classic {
        return Ok(request.required.clone());
    }
    let scope = scope.ok_or_else(|| EntraError::missing_parameter("scope"))?;
    let tenant = directory
        .tenant(tenant_id)
        .ok_or_else(|| EntraError::tenant_not_found(tenant_id))?;
    let mut grants = Vec::new();
    for item in scope.split_whitespace() {
        let Some(identifier) = item.strip_suffix("/.default") else {
            return Err(EntraError::invalid_scope(item));
        };
        let resource = tenant
            .resource(identifier)
            .ok_or_else(|| EntraError::resource_not_found(identifier, tenant_id))?;
        let requested: Vec<&RequiredPermission> = request
            .required
            .iter()
            .filter(|permission| permission.resource.eq_ignore_ascii_case(&resource.app_id))
            .collect();
        if requested.is_empty() {
            return Err(EntraError::resource_not_required(identifier));
        }
        grants.extend(requested.into_iter().cloned());
    }
    Ok(grants)
}

async fn show_form(
    state: Arc<IdentityState>,
    form: ConsentForm,
    tenant_segment: String,
    query: Option<String>,
) -> Response {
    state.count_endpoint("adminconsent");
    let params = parse_form(query.unwrap_or_default().as_bytes());
    let directory = lock(&state.directory);
    match validate(&directory, &tenant_segment, &params) {
        Ok(_) => Html(form_page(&form.path(&tenant_segment), &params, None)).into_response(),
        Err(error) => error_page(&error),
    }
}

async fn submit(
    state: Arc<IdentityState>,
    form: ConsentForm,
    tenant_segment: String,
    body: Bytes,
) -> Response {
    state.count_endpoint("adminconsent");
    let params = parse_form(&body);
    let action = form.path(&tenant_segment);
    let mut directory = lock(&state.directory);
    let request = match validate(&directory, &tenant_segment, &params) {
        Ok(request) => request,
        Err(error) => return error_page(&error),
    };
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        return Html(form_page(
            &action,
            &params,
            Some("Enter your username and password."),
        ))
        .into_response();
    };
    let (tenant_id, admin) = match find_user(&directory, &request.alias, username) {
        Ok((tenant, user)) => (tenant.id.clone(), user.clone()),
        Err(error) => {
            return Html(form_page(&action, &params, Some(&error.described()))).into_response();
        }
    };
    if let Err(error) = sign_in_with_password(&state, &admin, password, SignInKind::Interactive, "")
    {
        return Html(form_page(&action, &params, Some(&error.described()))).into_response();
    }
    if !admin.global_admin {
        return redirect_error(&request, &params, &EntraError::admin_consent_required());
    }
    let grants = match grants_for(form, &request, &directory, &tenant_id, params.get("scope")) {
        Ok(grants) => grants,
        Err(error) => return redirect_error(&request, &params, &error),
    };
    let Some(app) = directory.find_app_mut(&request.client_id) else {
        return error_page(&EntraError::app_not_found(&request.client_id, &tenant_id));
    };
    for permission in grants {
        if !permission.scopes.is_empty() {
            app.delegated_grants.push(DelegatedGrant {
                resource: permission.resource.clone(),
                scopes: permission.scopes.clone(),
                user: None,
            });
        }
        if !permission.roles.is_empty() {
            app.app_role_grants.push(AppRoleGrant {
                resource: permission.resource.clone(),
                roles: permission.roles.clone(),
            });
        }
    }
    let mut pairs = vec![("tenant", tenant_id.as_str())];
    if let Some(state) = params.get("state") {
        pairs.push(("state", state));
    }
    pairs.push(("admin_consent", "True"));
    if form == ConsentForm::V2
        && let Some(scope) = params.get("scope")
    {
        pairs.push(("scope", scope));
    }
    redirect_response(&request.redirect_uri, None, &pairs)
}

/// `GET /{tenant}/v2.0/adminconsent`.
pub(crate) async fn v2_form(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    show_form(state, ConsentForm::V2, tenant_segment, query).await
}

/// `POST /{tenant}/v2.0/adminconsent`.
pub(crate) async fn v2_submit(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
    body: Bytes,
) -> Response {
    submit(state, ConsentForm::V2, tenant_segment, body).await
}

/// `GET /{tenant}/adminconsent`.
pub(crate) async fn classic_form(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    show_form(state, ConsentForm::Classic, tenant_segment, query).await
}

/// `POST /{tenant}/adminconsent`.
pub(crate) async fn classic_submit(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
    body: Bytes,
) -> Response {
    submit(state, ConsentForm::Classic, tenant_segment, body).await
}
