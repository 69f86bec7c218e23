//! Microsoft Graph's application objects, as `m365mail setup` drives them (microsoft.md §9.4): app
//! registrations, their passwords and certificates, service principals — the tenant's own apps' and the
//! resource principals of Microsoft Graph and Office 365 Exchange Online with their permissions — app role
//! assignments (admin consent for application permissions) and delegated permission grants.
//!
//! Everything reads and writes the tenant model the token endpoint and the mail services use: an
//! application is an [`AppRegistration`], a password a [`crate::tenant::ClientSecret`], a key credential
//! an [`AppCertificate`], an app role assignment an entry of `app_role_grants`, a delegated permission
//! grant an entry of `delegated_grants`. So what setup creates is what a token then carries.
//!
//! | Method and path (under `/v1.0/`) | Permission (delegated tokens: also an admin user) | Answer |
//! |---|---|---|
//! | `GET applications` (`$filter=appId eq '…'` or `displayName eq '…'`, `$select`) | `Application.Read.All`¹ | the tenant's own apps |
//! | `POST applications` | `Application.ReadWrite.All` | 201, the application |
//! | `GET applications/{id}`, `applications(appId='…')` | `Application.Read.All`¹ | the application |
//! | `PATCH applications/{id}` (`displayName`, `signInAudience`, `isFallbackPublicClient`, `publicClient`, `requiredResourceAccess`, `keyCredentials`: each replaced whole) | `Application.ReadWrite.All` | 204 |
//! | `POST applications/{id}/addPassword` | `Application.ReadWrite.All` | 200, the password with `secretText` (once) |
//! | `POST applications/{id}/removePassword` (`{"keyId"}`) | `Application.ReadWrite.All` | 204 |
//! | `GET servicePrincipals` (`$filter=appId eq '…'` or `displayName eq '…'`), `servicePrincipals/{id}`, `servicePrincipals(appId='…')` | `Application.Read.All`¹ | service principals |
//! | `POST servicePrincipals` (`{"appId"}`) | `Application.ReadWrite.All` | 201, the app's service principal |
//! | `GET`/`POST servicePrincipals/{id}/appRoleAssignedTo` | `AppRoleAssignment.ReadWrite.All` (GET: `Application.Read.All`¹) | assignments; 201 |
//! | `DELETE servicePrincipals/{id}/appRoleAssignedTo/{assignmentId}` | `AppRoleAssignment.ReadWrite.All` | 204 |
//! | `GET servicePrincipals/{id}/appRoleAssignments` | `Application.Read.All`¹ | what the principal was granted |
//! | `GET oauth2PermissionGrants` (`$filter=clientId eq '…'` or `resourceId eq '…'`), `…/{id}` | `Application.Read.All`¹ | grants |
//! | `POST oauth2PermissionGrants` | `DelegatedPermissionGrant.ReadWrite.All` | 201, the grant |
//! | `PATCH`/`DELETE oauth2PermissionGrants/{id}` (PATCH: `{"scope"}`) | `DelegatedPermissionGrant.ReadWrite.All` | 204 |
//!
//! ¹ Or any of the write permissions, or `Directory.Read.All` (the sandbox's leniency for reads).
//!
//! Documented by Microsoft (the pages microsoft.md §9.4 cites): the paths, the bodies and the properties
//! named above, `secretText` shown once, a two-year default password lifetime, `requiredResourceAccess`
//! replaced whole on PATCH, one grant object per (client, resource, consentType, principal). The sandbox's
//! choices: the refusal codes and texts (403 `Authorization_RequestDenied` for a user without an admin role
//! or a token without the permission; 400 `Request_BadRequest` for a bad body, an unknown permission id,
//! a duplicate app role assignment; 409 `Request_MultipleObjectsWithSameKeyValue` for a second service
//! principal or grant of the same key; 404 `Request_ResourceNotFound`), ids of assignments and grants
//! derived from their content, `publicClient.redirectUris` holding every redirect URI of the model (no
//! `web` platform), no paging (at most [`MAX_APPS`] apps a tenant), unknown body properties refused. Until
//! `POST servicePrincipals`, an app created here has no service principal: client credentials answer
//! AADSTS7000229, and no consent can name it.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    GraphError, METADATA, bearer_token, graph_json, method_not_allowed_error,
    users::{option, query_pairs, string_literal},
};
use crate::{
    identity::{
        bearer::{Principal, Requirement},
        crypto::{hex_upper, random_guid, sha1},
        state::IdentityState,
    },
    permissions::{GRAPH_OIDC_SCOPES, PermissionKind, permission_id, scope_needs_admin},
    sync::lock,
    tenant::{
        AppCertificate, AppRegistration, AppRoleGrant, ClientSecret, DelegatedGrant,
        MICROSOFT_GRAPH_APP_ID, RequiredPermission, ResourceApi, Tenant, TenantModel,
    },
};

/// The most app registrations one tenant takes through Graph.
pub(crate) const MAX_APPS: usize = 1000;
/// The most passwords, key credentials, redirect URIs or resources in `requiredResourceAccess` one app has.
const MAX_PER_APP: usize = 50;
/// The most permissions of one resource in `requiredResourceAccess`.
const MAX_ACCESS_PER_RESOURCE: usize = 400;
/// The longest display name (Graph's own limit is 256 as well for applications: the sandbox's cap).
const MAX_NAME_CHARS: usize = 256;
/// The longest body these routes read.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// A password's default lifetime: two years (microsoft.md §9.4).
const DEFAULT_PASSWORD_SECONDS: u64 = 2 * 365 * 24 * 3600;

/// Whether a path (segments after `/v1.0`) is one of this module's.
pub(super) fn handles(segments: &[String]) -> bool {
    segments.first().is_some_and(|first| {
        [
            "applications",
            "servicePrincipals",
            "oauth2PermissionGrants",
        ]
        .iter()
        .any(|collection| {
            first == collection
                || first
                    .strip_prefix(collection)
                    .is_some_and(|rest| rest.starts_with('('))
        })
    })
}

/// Serves a request of [`handles`].
pub(super) async fn serve(
    State(state): State<Arc<IdentityState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, GraphError> {
    let segments = super::mail::path_segments(&uri);
    if body.len() > MAX_BODY_BYTES {
        return Err(bad_request(format!(
            "The request body is larger than the {MAX_BODY_BYTES} bytes these routes take."
        )));
    }
    let token = bearer_token(&headers)?;
    let mut directory = lock(&state.directory);
    let request = Request {
        state: &state,
        method: &method,
        uri: &uri,
        token,
        body: &body,
    };
    request.route(&mut directory, &segments)
}

struct Request<'a> {
    state: &'a IdentityState,
    method: &'a Method,
    uri: &'a Uri,
    token: &'a str,
    body: &'a [u8],
}

/// How a path names an object: by id, or by `(appId='…')`.
enum Key {
    Id(String),
    AppId(String),
}

/// `collection(appId='x')` → `Key::AppId(x)`; `None` when the segment is not of that form.
fn alternate_key(segment: &str, collection: &str) -> Option<Result<Key, GraphError>> {
    let inner = segment.strip_prefix(collection)?.strip_prefix('(')?;
    let Some(inner) = inner.strip_suffix(')') else {
        return Some(Err(bad_request(format!(
            "Invalid key segment '{segment}'."
        ))));
    };
    let Some((name, literal)) = inner.split_once('=') else {
        return Some(Ok(Key::Id(
            string_literal(inner.trim()).unwrap_or_else(|| inner.to_owned()),
        )));
    };
    if !name.trim().eq_ignore_ascii_case("appId") {
        return Some(Err(bad_request(format!(
            "The sandbox does not model the key '{name}'; use appId."
        ))));
    }
    Some(
        string_literal(literal.trim())
            .map(Key::AppId)
            .ok_or_else(|| bad_request(format!("Invalid key segment '{segment}'."))),
    )
}

fn bad_request(message: impl Into<String>) -> GraphError {
    GraphError::bad_request("Request_BadRequest", message)
}

fn conflict(message: impl Into<String>) -> GraphError {
    GraphError::new(
        StatusCode::CONFLICT,
        "Request_MultipleObjectsWithSameKeyValue",
        message,
    )
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn created(body: Value) -> Response {
    let mut response = graph_json(body);
    *response.status_mut() = StatusCode::CREATED;
    response
}

/// Graph's UTC date-time form.
fn date_time(unix: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(unix).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn parse_date_time(field: &str, text: &str) -> Result<u64, GraphError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|time| u64::try_from(time.timestamp()).ok())
        .ok_or_else(|| bad_request(format!("Invalid value '{text}' for property '{field}'.")))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GraphError> {
    serde_json::from_slice(body).map_err(|error| {
        bad_request(format!(
            "Invalid request body: {error}. The sandbox refuses properties it does not model."
        ))
    })
}

/// An optional body: empty means the type's default.
fn parse_optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, GraphError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

fn check_name(field: &str, name: &str) -> Result<(), GraphError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(bad_request(format!(
            "Property '{field}' must hold 1 to {MAX_NAME_CHARS} characters."
        )));
    }
    Ok(())
}

impl Request<'_> {
    /// Checks the token for `requirement`; a delegated token's user must hold an admin role. Returns the
    /// index of the token's tenant.
    fn authorize(
        &self,
        directory: &TenantModel,
        requirement: Requirement,
    ) -> Result<usize, GraphError> {
        let principal = self
            .state
            .check_bearer(directory, self.token, requirement)
            .map_err(|refusal| GraphError::refused(&refusal))?;
        let tenant_id = match &principal {
            Principal::User { tenant_id, .. } | Principal::App { tenant_id, .. } => tenant_id,
        };
        let index = directory
            .tenants
            .iter()
            .position(|tenant| tenant.id.eq_ignore_ascii_case(tenant_id))
            .ok_or_else(GraphError::insufficient_privileges)?;
        if let Principal::User { object_id, .. } = &principal {
            let admin = directory.tenants[index]
                .users
                .iter()
                .any(|user| user.object_id.eq_ignore_ascii_case(object_id) && user.global_admin);
            if !admin {
                return Err(GraphError::insufficient_privileges());
            }
        }
        Ok(index)
    }

    fn route(
        &self,
        directory: &mut TenantModel,
        segments: &[String],
    ) -> Result<Response, GraphError> {
        let first = segments[0].as_str();
        let rest = &segments[1..];
        if let Some(key) = alternate_key(first, "applications") {
            return self.application_routes(directory, key?, rest);
        }
        if let Some(key) = alternate_key(first, "servicePrincipals") {
            return self.service_principal_routes(directory, key?, rest);
        }
        match (first, rest) {
            ("applications", []) => match *self.method {
                Method::GET => self.list_applications(directory),
                Method::POST => self.create_application(directory),
                _ => Err(method_not_allowed_error()),
            },
            ("applications", [id, more @ ..]) => {
                self.application_routes(directory, Key::Id(id.clone()), more)
            }
            ("servicePrincipals", []) => match *self.method {
                Method::GET => self.list_service_principals(directory),
                Method::POST => self.create_service_principal(directory),
                _ => Err(method_not_allowed_error()),
            },
            ("servicePrincipals", [id, more @ ..]) => {
                self.service_principal_routes(directory, Key::Id(id.clone()), more)
            }
            ("oauth2PermissionGrants", []) => match *self.method {
                Method::GET => self.list_grants(directory),
                Method::POST => self.create_grant(directory),
                _ => Err(method_not_allowed_error()),
            },
            ("oauth2PermissionGrants", [id]) => match *self.method {
                Method::GET => self.one_grant(directory, id),
                Method::PATCH => self.update_grant(directory, id),
                Method::DELETE => self.delete_grant(directory, id),
                _ => Err(method_not_allowed_error()),
            },
            _ => Err(super::unknown_segment_named(segments, segments.len())),
        }
    }

    // ---- applications ------------------------------------------------------------------------

    fn application_routes(
        &self,
        directory: &mut TenantModel,
        key: Key,
        rest: &[String],
    ) -> Result<Response, GraphError> {
        match (rest, self.method) {
            ([], &Method::GET) => {
                let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_READ)?;
                let tenant = &directory.tenants[t];
                let app = find_application(tenant, &key)?;
                let mut body = application_json(tenant, app);
                body.insert(
                    "@odata.context".into(),
                    json!(format!("{METADATA}#applications/$entity")),
                );
                Ok(graph_json(select(Value::Object(body), self.uri)?))
            }
            ([], &Method::PATCH) => self.update_application(directory, &key),
            ([action], &Method::POST) if action == "addPassword" => {
                self.add_password(directory, &key)
            }
            ([action], &Method::POST) if action == "removePassword" => {
                self.remove_password(directory, &key)
            }
            ([], _) => Err(method_not_allowed_error()),
            ([action], _) if action == "addPassword" || action == "removePassword" => {
                Err(method_not_allowed_error())
            }
            _ => Err(bad_request(format!(
                "Resource not found for the segment '{}'.",
                rest[0]
            ))),
        }
    }

    fn list_applications(&self, directory: &TenantModel) -> Result<Response, GraphError> {
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_READ)?;
        let tenant = &directory.tenants[t];
        let filter = EqFilter::from_uri(self.uri, &["appId", "displayName", "id"])?;
        let value: Vec<Value> = tenant
            .apps
            .iter()
            .filter(|app| !app.first_party)
            .filter(|app| {
                filter.as_ref().is_none_or(|f| {
                    f.matches(match f.property {
                        "appId" => app.client_id.clone(),
                        "displayName" => app.display_name.clone(),
                        _ => app.application_object_id(),
                    })
                })
            })
            .map(|app| select(Value::Object(application_json(tenant, app)), self.uri))
            .collect::<Result<_, _>>()?;
        Ok(graph_json(json!({
            "@odata.context": format!("{METADATA}#applications"),
            "value": value,
        })))
    }

    fn create_application(&self, directory: &mut TenantModel) -> Result<Response, GraphError> {
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_WRITE)?;
        let body: ApplicationBody = parse_body(self.body)?;
        let tenant = &mut directory.tenants[t];
        let display_name = body
            .display_name
            .clone()
            .ok_or_else(|| bad_request("Property 'displayName' is required."))?;
        if tenant.apps.iter().filter(|app| !app.first_party).count() >= MAX_APPS {
            return Err(bad_request(format!(
                "The tenant has {MAX_APPS} applications, the sandbox's limit."
            )));
        }
        let mut app = AppRegistration {
            client_id: random_guid(),
            display_name: String::new(),
            service_principal_object_id: String::new(),
            allow_public_client_flows: false,
            redirect_uris: Vec::new(),
            secrets: Vec::new(),
            certificates: Vec::new(),
            required_permissions: Vec::new(),
            delegated_grants: Vec::new(),
            app_role_grants: Vec::new(),
            enabled: true,
            application_object_id: random_guid(),
            sign_in_audience: "AzureADMyOrg".into(),
            has_service_principal: false,
            first_party: false,
        };
        body.apply(tenant, &mut app, self.state.now_unix())?;
        app.display_name = display_name;
        let mut json = application_json(tenant, &app);
        json.insert(
            "@odata.context".into(),
            json!(format!("{METADATA}#applications/$entity")),
        );
        tracing::debug!(client_id = %app.client_id, "sandbox Graph: application created");
        tenant.apps.push(app);
        Ok(created(Value::Object(json)))
    }

    fn update_application(
        &self,
        directory: &mut TenantModel,
        key: &Key,
    ) -> Result<Response, GraphError> {
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_WRITE)?;
        let body: ApplicationBody = parse_body(self.body)?;
        let tenant = &mut directory.tenants[t];
        let index = application_index(tenant, key)?;
        // Applied to a copy: a refused body changes nothing.
        let mut app = tenant.apps[index].clone();
        body.apply(tenant, &mut app, self.state.now_unix())?;
        if let Some(name) = body.display_name {
            app.display_name = name;
        }
        tenant.apps[index] = app;
        Ok(no_content())
    }

    fn add_password(&self, directory: &mut TenantModel, key: &Key) -> Result<Response, GraphError> {
        #[derive(Default, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct AddPassword {
            #[serde(default)]
            password_credential: Option<PasswordIn>,
        }
        #[derive(Default, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct PasswordIn {
            #[serde(default)]
            display_name: Option<String>,
            #[serde(default)]
            start_date_time: Option<String>,
            #[serde(default)]
            end_date_time: Option<String>,
        }
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_WRITE)?;
        let request: AddPassword = parse_optional_body(self.body)?;
        let password = request.password_credential.unwrap_or_default();
        let now = self.state.now_unix();
        let start = password
            .start_date_time
            .as_deref()
            .map(|text| parse_date_time("startDateTime", text))
            .transpose()?
            .unwrap_or(now);
        let end = password
            .end_date_time
            .as_deref()
            .map(|text| parse_date_time("endDateTime", text))
            .transpose()?
            .unwrap_or(start.saturating_add(DEFAULT_PASSWORD_SECONDS));
        if end <= start {
            return Err(bad_request("'endDateTime' must be after 'startDateTime'."));
        }
        let display_name = password.display_name.unwrap_or_default();
        if display_name.chars().count() > MAX_NAME_CHARS {
            return Err(bad_request(format!(
                "'displayName' is longer than {MAX_NAME_CHARS} characters."
            )));
        }
        let tenant = &mut directory.tenants[t];
        let index = application_index(tenant, key)?;
        let app = &mut tenant.apps[index];
        if app.secrets.len() >= MAX_PER_APP {
            return Err(bad_request(format!(
                "The application has {MAX_PER_APP} passwords, the sandbox's limit."
            )));
        }
        let secret = ClientSecret {
            secret_id: random_guid(),
            value: new_secret_text(),
            expires_at_unix: Some(end),
            display_name,
            start_at_unix: Some(start),
        };
        let mut body = password_json(&secret);
        body.insert("secretText".into(), json!(secret.value));
        body.insert(
            "@odata.context".into(),
            json!(format!("{METADATA}#microsoft.graph.passwordCredential")),
        );
        tracing::debug!(client_id = %app.client_id, key_id = %secret.secret_id, "sandbox Graph: password added");
        app.secrets.push(secret);
        Ok(graph_json(Value::Object(body)))
    }

    fn remove_password(
        &self,
        directory: &mut TenantModel,
        key: &Key,
    ) -> Result<Response, GraphError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct RemovePassword {
            key_id: String,
        }
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_WRITE)?;
        let request: RemovePassword = parse_body(self.body)?;
        let tenant = &mut directory.tenants[t];
        let index = application_index(tenant, key)?;
        let app = &mut tenant.apps[index];
        let before = app.secrets.len();
        app.secrets
            .retain(|secret| !secret.secret_id.eq_ignore_ascii_case(&request.key_id));
        if app.secrets.len() == before {
            return Err(GraphError::resource_not_found(&request.key_id));
        }
        Ok(no_content())
    }

    // ---- service principals --------------------------------------------------------------------

    fn service_principal_routes(
        &self,
        directory: &mut TenantModel,
        key: Key,
        rest: &[String],
    ) -> Result<Response, GraphError> {
        match (rest, self.method) {
            ([], &Method::GET) => {
                let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_READ)?;
                let tenant = &directory.tenants[t];
                let principal = find_service_principal(tenant, &key)?;
                let mut body = principal.json(tenant);
                body.insert(
                    "@odata.context".into(),
                    json!(format!("{METADATA}#servicePrincipals/$entity")),
                );
                Ok(graph_json(select(Value::Object(body), self.uri)?))
            }
            ([], _) => Err(method_not_allowed_error()),
            // Assignments to this principal as a resource, or held by it as a client: one list, two sides.
            ([relation], &Method::GET)
                if relation == "appRoleAssignedTo" || relation == "appRoleAssignments" =>
            {
                let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_READ)?;
                let tenant = &directory.tenants[t];
                let principal = find_service_principal(tenant, &key)?;
                let side = if relation == "appRoleAssignedTo" {
                    "resourceId"
                } else {
                    "principalId"
                };
                let value: Vec<Value> = role_assignments(tenant)
                    .into_iter()
                    .filter(|assignment| assignment[side] == json!(principal.id(tenant)))
                    .collect();
                Ok(graph_json(json!({
                    "@odata.context": format!("{METADATA}#servicePrincipals('{}')/{relation}", principal.id(tenant)),
                    "value": value,
                })))
            }
            ([relation], &Method::POST) if relation == "appRoleAssignedTo" => {
                self.assign_app_role(directory, &key)
            }
            ([relation, assignment], &Method::DELETE) if relation == "appRoleAssignedTo" => {
                self.remove_app_role_assignment(directory, &key, assignment)
            }
            ([relation, ..], _)
                if relation == "appRoleAssignedTo" || relation == "appRoleAssignments" =>
            {
                Err(method_not_allowed_error())
            }
            _ => Err(bad_request(format!(
                "Resource not found for the segment '{}'.",
                rest[0]
            ))),
        }
    }

    fn list_service_principals(&self, directory: &TenantModel) -> Result<Response, GraphError> {
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_READ)?;
        let tenant = &directory.tenants[t];
        let filter = EqFilter::from_uri(self.uri, &["appId", "displayName", "id"])?;
        let value: Vec<Value> = service_principals(tenant)
            .filter(|principal| {
                filter.as_ref().is_none_or(|f| {
                    f.matches(match f.property {
                        "appId" => principal.app_id().to_owned(),
                        "displayName" => principal.display_name().to_owned(),
                        _ => principal.id(tenant),
                    })
                })
            })
            .map(|principal| select(Value::Object(principal.json(tenant)), self.uri))
            .collect::<Result<_, _>>()?;
        Ok(graph_json(json!({
            "@odata.context": format!("{METADATA}#servicePrincipals"),
            "value": value,
        })))
    }

    fn create_service_principal(
        &self,
        directory: &mut TenantModel,
    ) -> Result<Response, GraphError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct CreateServicePrincipal {
            app_id: String,
        }
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_WRITE)?;
        let request: CreateServicePrincipal = parse_body(self.body)?;
        let tenant = &mut directory.tenants[t];
        let taken = || {
            conflict(format!(
                "The service principal cannot be created because the service principal name {} is already in use.",
                request.app_id
            ))
        };
        if tenant.resource(&request.app_id).is_some() {
            return Err(taken());
        }
        let app = tenant
            .apps
            .iter_mut()
            .find(|app| app.client_id.eq_ignore_ascii_case(&request.app_id))
            .ok_or_else(|| {
                bad_request(format!(
                    "The appId '{}' of the service principal does not reference a valid application object.",
                    request.app_id
                ))
            })?;
        if app.has_service_principal {
            return Err(taken());
        }
        app.has_service_principal = true;
        if app.service_principal_object_id.is_empty() {
            app.service_principal_object_id = random_guid();
        }
        let app = app.clone();
        let mut body = ServicePrincipal::App(&app).json(tenant);
        body.insert(
            "@odata.context".into(),
            json!(format!("{METADATA}#servicePrincipals/$entity")),
        );
        Ok(created(Value::Object(body)))
    }

    fn assign_app_role(
        &self,
        directory: &mut TenantModel,
        key: &Key,
    ) -> Result<Response, GraphError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Assignment {
            principal_id: String,
            resource_id: String,
            app_role_id: String,
            #[serde(default)]
            principal_type: Option<String>,
        }
        let t = self.authorize(directory, Requirement::GRAPH_APP_ROLE_ASSIGNMENTS_WRITE)?;
        let request: Assignment = parse_body(self.body)?;
        let tenant = &mut directory.tenants[t];
        let resource = match find_service_principal(tenant, key)? {
            ServicePrincipal::Resource(resource) => resource.clone(),
            ServicePrincipal::App(_) => {
                return Err(bad_request(
                    "Permission being assigned was not found on application: the service principal defines no app roles.",
                ));
            }
        };
        let resource_id = tenant.resource_service_principal_id(&resource);
        if !request.resource_id.eq_ignore_ascii_case(&resource_id) {
            return Err(bad_request(
                "'resourceId' must be the service principal of the request's path.",
            ));
        }
        if request
            .principal_type
            .as_deref()
            .is_some_and(|kind| !kind.eq_ignore_ascii_case("ServicePrincipal"))
        {
            return Err(bad_request(
                "The sandbox models app role assignments to service principals only.",
            ));
        }
        let role = resource
            .app_roles
            .iter()
            .find(|role| {
                permission_id(&resource.app_id, PermissionKind::Role, role)
                    .eq_ignore_ascii_case(&request.app_role_id)
            })
            .cloned()
            .ok_or_else(|| {
                bad_request(format!(
                    "Permission being assigned was not found on application '{}': no app role {}.",
                    resource.app_id, request.app_role_id
                ))
            })?;
        let app = tenant
            .apps
            .iter_mut()
            .find(|app| {
                app.service_principal_id()
                    .is_some_and(|id| id.eq_ignore_ascii_case(&request.principal_id))
            })
            .ok_or_else(|| GraphError::resource_not_found(&request.principal_id))?;
        if app
            .granted_roles(&resource.app_id)
            .iter()
            .any(|granted| granted.eq_ignore_ascii_case(&role))
        {
            return Err(bad_request(
                "Permission being assigned already exists on the object.",
            ));
        }
        match app
            .app_role_grants
            .iter_mut()
            .find(|grant| grant.resource.eq_ignore_ascii_case(&resource.app_id))
        {
            Some(grant) => grant.roles.push(role.clone()),
            None => app.app_role_grants.push(AppRoleGrant {
                resource: resource.app_id.clone(),
                roles: vec![role.clone()],
            }),
        }
        let app = app.clone();
        let mut body = assignment_json(tenant, &app, &resource, &role);
        body.insert(
            "@odata.context".into(),
            json!(format!(
                "{METADATA}#servicePrincipals('{resource_id}')/appRoleAssignedTo/$entity"
            )),
        );
        Ok(created(Value::Object(body)))
    }

    fn remove_app_role_assignment(
        &self,
        directory: &mut TenantModel,
        key: &Key,
        assignment_id: &str,
    ) -> Result<Response, GraphError> {
        let t = self.authorize(directory, Requirement::GRAPH_APP_ROLE_ASSIGNMENTS_WRITE)?;
        let tenant = &mut directory.tenants[t];
        let resource = match find_service_principal(tenant, key)? {
            ServicePrincipal::Resource(resource) => resource.clone(),
            ServicePrincipal::App(_) => return Err(GraphError::resource_not_found(assignment_id)),
        };
        let found = tenant.apps.iter().find_map(|app| {
            app.granted_roles(&resource.app_id)
                .into_iter()
                .find(|role| assignment_id_of(tenant, app, &resource, role) == assignment_id)
                .map(|role| (app.client_id.clone(), role))
        });
        let (client_id, role) =
            found.ok_or_else(|| GraphError::resource_not_found(assignment_id))?;
        if let Some(app) = tenant
            .apps
            .iter_mut()
            .find(|app| app.client_id == client_id)
        {
            for grant in &mut app.app_role_grants {
                if grant.resource.eq_ignore_ascii_case(&resource.app_id) {
                    grant.roles.retain(|r| !r.eq_ignore_ascii_case(&role));
                }
            }
            app.app_role_grants.retain(|grant| !grant.roles.is_empty());
        }
        Ok(no_content())
    }

    // ---- delegated permission grants -----------------------------------------------------------

    fn list_grants(&self, directory: &TenantModel) -> Result<Response, GraphError> {
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_READ)?;
        let tenant = &directory.tenants[t];
        let filter = EqFilter::from_uri(self.uri, &["clientId", "resourceId", "consentType"])?;
        let value: Vec<Value> = permission_grants(tenant)
            .into_iter()
            .filter(|grant| {
                filter.as_ref().is_none_or(|f| {
                    f.matches(
                        grant.json[f.property]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
            })
            .map(|grant| grant.json)
            .collect();
        Ok(graph_json(json!({
            "@odata.context": format!("{METADATA}#oauth2PermissionGrants"),
            "value": value,
        })))
    }

    fn one_grant(&self, directory: &TenantModel, id: &str) -> Result<Response, GraphError> {
        let t = self.authorize(directory, Requirement::GRAPH_APPLICATIONS_READ)?;
        let grant = permission_grants(&directory.tenants[t])
            .into_iter()
            .find(|grant| grant.id == id)
            .ok_or_else(|| GraphError::resource_not_found(id))?;
        let mut body = grant.json;
        body["@odata.context"] = json!(format!("{METADATA}#oauth2PermissionGrants/$entity"));
        Ok(graph_json(body))
    }

    fn create_grant(&self, directory: &mut TenantModel) -> Result<Response, GraphError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct CreateGrant {
            client_id: String,
            consent_type: String,
            #[serde(default)]
            principal_id: Option<String>,
            resource_id: String,
            #[serde(default)]
            scope: String,
            #[serde(default)]
            start_time: Option<String>,
            #[serde(default)]
            expiry_time: Option<String>,
        }
        let t = self.authorize(directory, Requirement::GRAPH_DELEGATED_GRANTS_WRITE)?;
        let request: CreateGrant = parse_body(self.body)?;
        let tenant = &mut directory.tenants[t];
        let user = match (request.consent_type.as_str(), &request.principal_id) {
            ("AllPrincipals", None) => None,
            ("AllPrincipals", Some(_)) => {
                return Err(bad_request(
                    "'principalId' must be null when 'consentType' is AllPrincipals.",
                ));
            }
            ("Principal", Some(principal)) => Some(
                tenant
                    .users
                    .iter()
                    .find(|user| user.object_id.eq_ignore_ascii_case(principal))
                    .map(|user| user.upn.clone())
                    .ok_or_else(|| GraphError::resource_not_found(principal))?,
            ),
            ("Principal", None) => {
                return Err(bad_request(
                    "'principalId' is required when 'consentType' is Principal.",
                ));
            }
            (other, _) => {
                return Err(bad_request(format!(
                    "Invalid value '{other}' for 'consentType': AllPrincipals or Principal."
                )));
            }
        };
        let resource = resource_by_principal_id(tenant, &request.resource_id)?.clone();
        let scopes = checked_scopes(&resource, &request.scope)?;
        let app_index = tenant
            .apps
            .iter()
            .position(|app| {
                app.service_principal_id()
                    .is_some_and(|id| id.eq_ignore_ascii_case(&request.client_id))
            })
            .ok_or_else(|| GraphError::resource_not_found(&request.client_id))?;
        let exists = tenant.apps[app_index].delegated_grants.iter().any(|grant| {
            grant.resource.eq_ignore_ascii_case(&resource.app_id) && same_user(&grant.user, &user)
        });
        if exists {
            return Err(conflict(
                "Permission entry already exists: update it with PATCH.",
            ));
        }
        let app = &mut tenant.apps[app_index];
        app.delegated_grants.push(DelegatedGrant {
            resource: resource.app_id.clone(),
            scopes,
            user,
        });
        let _ = (request.start_time, request.expiry_time);
        let client_id = app.service_principal_id().unwrap_or_default().to_owned();
        let resource_id = tenant.resource_service_principal_id(&resource);
        let principal_id = request
            .principal_id
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let id = grant_id(
            &tenant.id,
            &client_id,
            &resource_id,
            &request.consent_type,
            &principal_id,
        );
        let grant = permission_grants(tenant)
            .into_iter()
            .find(|grant| grant.id == id)
            .ok_or_else(|| GraphError::resource_not_found(&request.client_id))?;
        let mut body = grant.json;
        body["@odata.context"] = json!(format!("{METADATA}#oauth2PermissionGrants/$entity"));
        Ok(created(body))
    }

    fn update_grant(&self, directory: &mut TenantModel, id: &str) -> Result<Response, GraphError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct UpdateGrant {
            scope: String,
        }
        let t = self.authorize(directory, Requirement::GRAPH_DELEGATED_GRANTS_WRITE)?;
        let request: UpdateGrant = parse_body(self.body)?;
        let tenant = &mut directory.tenants[t];
        let grant = permission_grants(tenant)
            .into_iter()
            .find(|grant| grant.id == id)
            .ok_or_else(|| GraphError::resource_not_found(id))?;
        let resource = tenant
            .resource(&grant.resource_app_id)
            .cloned()
            .ok_or_else(|| GraphError::resource_not_found(id))?;
        let scopes = checked_scopes(&resource, &request.scope)?;
        let app = &mut tenant.apps[grant.app_index];
        // The grant object may stand for several entries of the model (the admin API appends): one remains.
        app.delegated_grants.retain(|entry| {
            !(entry.resource.eq_ignore_ascii_case(&grant.resource_app_id)
                && same_user(&entry.user, &grant.user))
        });
        app.delegated_grants.push(DelegatedGrant {
            resource: grant.resource_app_id,
            scopes,
            user: grant.user,
        });
        Ok(no_content())
    }

    fn delete_grant(&self, directory: &mut TenantModel, id: &str) -> Result<Response, GraphError> {
        let t = self.authorize(directory, Requirement::GRAPH_DELEGATED_GRANTS_WRITE)?;
        let tenant = &mut directory.tenants[t];
        let grant = permission_grants(tenant)
            .into_iter()
            .find(|grant| grant.id == id)
            .ok_or_else(|| GraphError::resource_not_found(id))?;
        tenant.apps[grant.app_index]
            .delegated_grants
            .retain(|entry| {
                !(entry.resource.eq_ignore_ascii_case(&grant.resource_app_id)
                    && same_user(&entry.user, &grant.user))
            });
        Ok(no_content())
    }
}

fn same_user(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// A `scope` string checked against the resource's delegated permissions (space-separated values).
fn checked_scopes(resource: &ResourceApi, scope: &str) -> Result<Vec<String>, GraphError> {
    let mut scopes: Vec<String> = Vec::new();
    for value in scope.split_whitespace() {
        let canonical = resource_scopes(resource)
            .into_iter()
            .find(|defined| defined.eq_ignore_ascii_case(value))
            .ok_or_else(|| {
                bad_request(format!(
                    "Invalid value specified for property 'scope': '{value}' is not a delegated permission of {}.",
                    resource.display_name
                ))
            })?;
        if !scopes.iter().any(|s| s == &canonical) {
            scopes.push(canonical);
        }
        if scopes.len() > MAX_ACCESS_PER_RESOURCE {
            return Err(bad_request("Too many scopes."));
        }
    }
    Ok(scopes)
}

/// The delegated permissions a resource shows (Graph adds the OpenID Connect ones).
fn resource_scopes(resource: &ResourceApi) -> Vec<String> {
    let mut scopes = resource.scopes.clone();
    if resource.app_id.eq_ignore_ascii_case(MICROSOFT_GRAPH_APP_ID) {
        scopes.extend(GRAPH_OIDC_SCOPES.iter().map(|s| s.to_string()));
    }
    scopes
}

fn resource_by_principal_id<'t>(
    tenant: &'t Tenant,
    id: &str,
) -> Result<&'t ResourceApi, GraphError> {
    tenant
        .resources
        .iter()
        .find(|resource| {
            tenant
                .resource_service_principal_id(resource)
                .eq_ignore_ascii_case(id)
        })
        .ok_or_else(|| GraphError::resource_not_found(id))
}

/// A grant object's id: derived from its key (client, resource, consent type, principal).
fn grant_id(
    tenant_id: &str,
    client_id: &str,
    resource_id: &str,
    consent_type: &str,
    principal_id: &str,
) -> String {
    crate::tenant::derived_guid(&[
        "oauth2-permission-grant",
        tenant_id,
        client_id,
        resource_id,
        consent_type,
        principal_id,
    ])
}

/// A delegated permission grant as Graph shows it, with where it lives in the model.
struct PermissionGrant {
    id: String,
    app_index: usize,
    resource_app_id: String,
    user: Option<String>,
    json: Value,
}

/// Every grant of the tenant: one object per (client, resource, consent type, principal), the model's
/// entries of that key merged.
fn permission_grants(tenant: &Tenant) -> Vec<PermissionGrant> {
    let mut grants: Vec<PermissionGrant> = Vec::new();
    for (app_index, app) in tenant.apps.iter().enumerate() {
        let Some(client_id) = app.service_principal_id() else {
            continue;
        };
        for entry in &app.delegated_grants {
            let Some(resource) = tenant.resource(&entry.resource) else {
                continue;
            };
            let resource_id = tenant.resource_service_principal_id(resource);
            let principal_id = entry
                .user
                .as_deref()
                .and_then(|upn| tenant.user(upn).map(|user| user.object_id.clone()));
            let consent_type = if entry.user.is_some() {
                "Principal"
            } else {
                "AllPrincipals"
            };
            let id = grant_id(
                &tenant.id,
                client_id,
                &resource_id,
                consent_type,
                principal_id.as_deref().unwrap_or_default(),
            );
            if let Some(existing) = grants.iter_mut().find(|grant| grant.id == id) {
                let mut scopes: Vec<String> = existing.json["scope"]
                    .as_str()
                    .unwrap_or_default()
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                for scope in &entry.scopes {
                    if !scopes.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
                        scopes.push(scope.clone());
                    }
                }
                existing.json["scope"] = json!(scopes.join(" "));
                continue;
            }
            grants.push(PermissionGrant {
                json: json!({
                    "clientId": client_id,
                    "consentType": consent_type,
                    "id": id,
                    "principalId": principal_id,
                    "resourceId": resource_id,
                    "scope": entry.scopes.join(" "),
                }),
                id,
                app_index,
                resource_app_id: resource.app_id.clone(),
                user: entry.user.clone(),
            });
        }
    }
    grants
}

fn assignment_id_of(
    tenant: &Tenant,
    app: &AppRegistration,
    resource: &ResourceApi,
    role: &str,
) -> String {
    crate::tenant::derived_guid(&[
        "app-role-assignment",
        &tenant.id,
        app.service_principal_id().unwrap_or(&app.client_id),
        &resource.app_id,
        role,
    ])
}

fn assignment_json(
    tenant: &Tenant,
    app: &AppRegistration,
    resource: &ResourceApi,
    role: &str,
) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "id": assignment_id_of(tenant, app, resource, role),
        "appRoleId": permission_id(&resource.app_id, PermissionKind::Role, role),
        "createdDateTime": null,
        "deletedDateTime": null,
        "principalDisplayName": app.display_name,
        "principalId": app.service_principal_id().unwrap_or(&app.client_id),
        "principalType": "ServicePrincipal",
        "resourceDisplayName": resource.display_name,
        "resourceId": tenant.resource_service_principal_id(resource),
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

/// Every app role assignment of the tenant (apps with a service principal).
fn role_assignments(tenant: &Tenant) -> Vec<Value> {
    let mut assignments = Vec::new();
    for app in tenant.apps.iter().filter(|app| app.has_service_principal) {
        for resource in &tenant.resources {
            for role in app.granted_roles(&resource.app_id) {
                assignments.push(Value::Object(assignment_json(tenant, app, resource, &role)));
            }
        }
    }
    assignments
}

/// A service principal of the tenant: a resource's or an app's.
#[derive(Clone, Copy)]
enum ServicePrincipal<'t> {
    Resource(&'t ResourceApi),
    App(&'t AppRegistration),
}

impl ServicePrincipal<'_> {
    fn id(&self, tenant: &Tenant) -> String {
        match self {
            Self::Resource(resource) => tenant.resource_service_principal_id(resource),
            Self::App(app) => app
                .service_principal_id()
                .unwrap_or(&app.client_id)
                .to_owned(),
        }
    }

    fn app_id(&self) -> &str {
        match self {
            Self::Resource(resource) => &resource.app_id,
            Self::App(app) => &app.client_id,
        }
    }

    fn display_name(&self) -> &str {
        match self {
            Self::Resource(resource) => &resource.display_name,
            Self::App(app) => &app.display_name,
        }
    }

    fn json(&self, tenant: &Tenant) -> Map<String, Value> {
        let (enabled, owner, names, roles, scopes) = match self {
            Self::Resource(resource) => {
                let mut names = resource.identifier_uris.clone();
                names.push(resource.app_id.clone());
                let roles: Vec<Value> = resource
                    .app_roles
                    .iter()
                    .map(|role| {
                        json!({
                            "allowedMemberTypes": ["Application"],
                            "description": format!("{role} (application permission, m365mail sandbox)"),
                            "displayName": role,
                            "id": permission_id(&resource.app_id, PermissionKind::Role, role),
                            "isEnabled": true,
                            "origin": "Application",
                            "value": role,
                        })
                    })
                    .collect();
                let scopes: Vec<Value> = resource_scopes(resource)
                    .iter()
                    .map(|scope| {
                        json!({
                            "adminConsentDescription": format!("{scope} (delegated permission, m365mail sandbox)"),
                            "adminConsentDisplayName": scope,
                            "id": permission_id(&resource.app_id, PermissionKind::Scope, scope),
                            "isEnabled": true,
                            "type": if scope_needs_admin(scope) { "Admin" } else { "User" },
                            "userConsentDescription": null,
                            "userConsentDisplayName": null,
                            "value": scope,
                        })
                    })
                    .collect();
                (true, Value::Null, names, roles, scopes)
            }
            Self::App(app) => (
                app.enabled,
                if app.first_party {
                    Value::Null
                } else {
                    json!(tenant.id)
                },
                vec![app.client_id.clone()],
                Vec::new(),
                Vec::new(),
            ),
        };
        let Value::Object(map) = json!({
            "id": self.id(tenant),
            "accountEnabled": enabled,
            "appDisplayName": self.display_name(),
            "appId": self.app_id(),
            "appOwnerOrganizationId": owner,
            "displayName": self.display_name(),
            "servicePrincipalNames": names,
            "servicePrincipalType": "Application",
            "appRoles": roles,
            "oauth2PermissionScopes": scopes,
        }) else {
            unreachable!("a JSON object literal")
        };
        map
    }
}

/// The tenant's service principals: the resources', then the apps' that have one.
fn service_principals(tenant: &Tenant) -> impl Iterator<Item = ServicePrincipal<'_>> {
    tenant
        .resources
        .iter()
        .map(ServicePrincipal::Resource)
        .chain(
            tenant
                .apps
                .iter()
                .filter(|app| app.has_service_principal)
                .map(ServicePrincipal::App),
        )
}

fn find_service_principal<'t>(
    tenant: &'t Tenant,
    key: &Key,
) -> Result<ServicePrincipal<'t>, GraphError> {
    let (wanted, by_app_id) = match key {
        Key::Id(id) => (id, false),
        Key::AppId(app_id) => (app_id, true),
    };
    service_principals(tenant)
        .find(|principal| {
            if by_app_id {
                principal.app_id().eq_ignore_ascii_case(wanted)
            } else {
                principal.id(tenant).eq_ignore_ascii_case(wanted)
            }
        })
        .ok_or_else(|| GraphError::resource_not_found(wanted))
}

fn application_index(tenant: &Tenant, key: &Key) -> Result<usize, GraphError> {
    let (wanted, by_app_id) = match key {
        Key::Id(id) => (id, false),
        Key::AppId(app_id) => (app_id, true),
    };
    tenant
        .apps
        .iter()
        .position(|app| {
            !app.first_party
                && if by_app_id {
                    app.client_id.eq_ignore_ascii_case(wanted)
                } else {
                    app.application_object_id().eq_ignore_ascii_case(wanted)
                }
        })
        .ok_or_else(|| GraphError::resource_not_found(wanted))
}

fn find_application<'t>(tenant: &'t Tenant, key: &Key) -> Result<&'t AppRegistration, GraphError> {
    application_index(tenant, key).map(|index| &tenant.apps[index])
}

/// A new client secret value: Entra's shape (three characters, a digit, `Q~`, then 34 of
/// `[A-Za-z0-9._~-]`: 40 in all).
fn new_secret_text() -> String {
    use rand::Rng as _;
    const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const BODY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";
    let mut rng = rand::rng();
    let mut text = String::with_capacity(40);
    for _ in 0..3 {
        text.push(char::from(
            ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())],
        ));
    }
    text.push(char::from(b'0' + rng.random_range(0..10u8)));
    text.push_str("Q~");
    for _ in 0..34 {
        text.push(char::from(BODY[rng.random_range(0..BODY.len())]));
    }
    text
}

fn password_json(secret: &ClientSecret) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "customKeyIdentifier": null,
        "displayName": if secret.display_name.is_empty() { Value::Null } else { json!(secret.display_name) },
        "endDateTime": secret.expires_at_unix.map(date_time),
        "hint": secret.value.chars().take(3).collect::<String>(),
        "keyId": secret.secret_id,
        "secretText": null,
        "startDateTime": secret.start_at_unix.map(date_time),
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

fn key_credential_json(certificate: &AppCertificate) -> Value {
    let thumbprint = certificate
        .der()
        .map(|der| hex_upper(&sha1(&der)))
        .unwrap_or_default();
    json!({
        "customKeyIdentifier": thumbprint,
        "displayName": if certificate.display_name.is_empty() { Value::Null } else { json!(certificate.display_name) },
        "endDateTime": certificate.expires_at_unix.map(date_time),
        "key": null,
        "keyId": certificate.key_id(),
        "startDateTime": certificate.start_at_unix.map(date_time),
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
    })
}

/// `requiredResourceAccess` from the model's names.
fn required_resource_access(tenant: &Tenant, app: &AppRegistration) -> Vec<Value> {
    app.required_permissions
        .iter()
        .map(|permission| {
            let resource_app_id = tenant
                .resource(&permission.resource)
                .map_or(permission.resource.clone(), |r| r.app_id.clone());
            let access: Vec<Value> = permission
                .roles
                .iter()
                .map(|role| {
                    json!({"id": permission_id(&resource_app_id, PermissionKind::Role, role), "type": "Role"})
                })
                .chain(permission.scopes.iter().map(|scope| {
                    json!({"id": permission_id(&resource_app_id, PermissionKind::Scope, scope), "type": "Scope"})
                }))
                .collect();
            json!({"resourceAppId": resource_app_id, "resourceAccess": access})
        })
        .collect()
}

fn application_json(tenant: &Tenant, app: &AppRegistration) -> Map<String, Value> {
    let Value::Object(map) = json!({
        "id": app.application_object_id(),
        "appId": app.client_id,
        "displayName": app.display_name,
        "createdDateTime": null,
        "signInAudience": if app.sign_in_audience.is_empty() { "AzureADMyOrg" } else { app.sign_in_audience.as_str() },
        "isFallbackPublicClient": app.allow_public_client_flows,
        "identifierUris": [],
        "publicClient": {"redirectUris": app.redirect_uris},
        "requiredResourceAccess": required_resource_access(tenant, app),
        "passwordCredentials": app.secrets.iter().map(|secret| Value::Object(password_json(secret))).collect::<Vec<_>>(),
        "keyCredentials": app.certificates.iter().map(key_credential_json).collect::<Vec<_>>(),
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

/// `$select=a,b` on one object (top-level names; unknown ones are Graph's 400).
fn select(value: Value, uri: &Uri) -> Result<Value, GraphError> {
    let pairs = query_pairs(uri)?;
    for (name, _) in pairs.iter().filter(|(name, _)| name.starts_with('$')) {
        if !["$select", "$filter", "$top"].contains(&name.to_ascii_lowercase().as_str()) {
            return Err(GraphError::unsupported_query(format!(
                "The sandbox does not model the query option '{name}' here."
            )));
        }
    }
    let Some(selected) = option(&pairs, "$select") else {
        return Ok(value);
    };
    let Value::Object(map) = value else {
        return Ok(value);
    };
    let mut kept = Map::new();
    for name in selected.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (key, field) = map
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .ok_or_else(|| bad_request(format!("Could not find a property named '{name}'.")))?;
        kept.insert(key.clone(), field.clone());
    }
    if let Some(context) = map.get("@odata.context") {
        kept.insert("@odata.context".into(), context.clone());
    }
    Ok(Value::Object(kept))
}

/// `$filter=property eq 'value'` (the forms setup's idempotent reads use).
struct EqFilter {
    property: &'static str,
    value: String,
}

impl EqFilter {
    fn from_uri(uri: &Uri, properties: &[&'static str]) -> Result<Option<Self>, GraphError> {
        let pairs = query_pairs(uri)?;
        let Some(raw) = option(&pairs, "$filter") else {
            return Ok(None);
        };
        let unsupported = || {
            GraphError::unsupported_query(format!(
                "The sandbox does not model the filter '{raw}'. It models {} eq '…'.",
                properties.join("|")
            ))
        };
        let text = raw.trim();
        let (name, rest) = text
            .split_once(char::is_whitespace)
            .ok_or_else(unsupported)?;
        let (operator, operand) = rest
            .trim_start()
            .split_once(char::is_whitespace)
            .ok_or_else(unsupported)?;
        if !operator.eq_ignore_ascii_case("eq") {
            return Err(unsupported());
        }
        let property = properties
            .iter()
            .find(|known| known.eq_ignore_ascii_case(name))
            .ok_or_else(unsupported)?;
        let value = string_literal(operand.trim()).ok_or_else(unsupported)?;
        Ok(Some(Self { property, value }))
    }

    fn matches(&self, actual: String) -> bool {
        actual.eq_ignore_ascii_case(&self.value)
    }
}

/// `POST /applications` and `PATCH /applications/{id}` bodies.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApplicationBody {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    sign_in_audience: Option<String>,
    #[serde(default)]
    is_fallback_public_client: Option<bool>,
    #[serde(default)]
    public_client: Option<PublicClientIn>,
    #[serde(default)]
    required_resource_access: Option<Vec<RequiredResourceAccessIn>>,
    #[serde(default)]
    key_credentials: Option<Vec<KeyCredentialIn>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PublicClientIn {
    #[serde(default)]
    redirect_uris: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequiredResourceAccessIn {
    resource_app_id: String,
    #[serde(default)]
    resource_access: Vec<ResourceAccessIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceAccessIn {
    id: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyCredentialIn {
    #[serde(rename = "type")]
    kind: String,
    usage: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    start_date_time: Option<String>,
    #[serde(default)]
    end_date_time: Option<String>,
    #[serde(default)]
    custom_key_identifier: Option<String>,
}

impl std::fmt::Debug for KeyCredentialIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCredentialIn")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ApplicationBody {
    /// Applies every property present (except `displayName`, which the caller sets) to `app`.
    fn apply(
        &self,
        tenant: &Tenant,
        app: &mut AppRegistration,
        now: u64,
    ) -> Result<(), GraphError> {
        if let Some(name) = &self.display_name {
            check_name("displayName", name)?;
        }
        if let Some(audience) = &self.sign_in_audience {
            const AUDIENCES: [&str; 4] = [
                "AzureADMyOrg",
                "AzureADMultipleOrgs",
                "AzureADandPersonalMicrosoftAccount",
                "PersonalMicrosoftAccount",
            ];
            if !AUDIENCES.contains(&audience.as_str()) {
                return Err(bad_request(format!(
                    "Invalid value '{audience}' for 'signInAudience'."
                )));
            }
            app.sign_in_audience = audience.clone();
        }
        if let Some(public) = self.is_fallback_public_client {
            app.allow_public_client_flows = public;
        }
        if let Some(public_client) = &self.public_client {
            if public_client.redirect_uris.len() > MAX_PER_APP
                || public_client
                    .redirect_uris
                    .iter()
                    .any(|uri| uri.len() > 2048 || url::Url::parse(uri).is_err())
            {
                return Err(bad_request(format!(
                    "'publicClient.redirectUris' takes at most {MAX_PER_APP} absolute URIs."
                )));
            }
            app.redirect_uris = public_client.redirect_uris.clone();
        }
        if let Some(required) = &self.required_resource_access {
            app.required_permissions = required_permissions(tenant, required)?;
        }
        if let Some(keys) = &self.key_credentials {
            app.certificates = key_credentials(&app.certificates, keys, now)?;
        }
        Ok(())
    }
}

/// `requiredResourceAccess` to the model's names; an unknown resource or permission id is refused.
fn required_permissions(
    tenant: &Tenant,
    required: &[RequiredResourceAccessIn],
) -> Result<Vec<RequiredPermission>, GraphError> {
    if required.len() > MAX_PER_APP {
        return Err(bad_request(format!(
            "'requiredResourceAccess' takes at most {MAX_PER_APP} resources."
        )));
    }
    let mut permissions: Vec<RequiredPermission> = Vec::new();
    for entry in required {
        let resource = tenant
            .resources
            .iter()
            .find(|resource| resource.app_id.eq_ignore_ascii_case(&entry.resource_app_id))
            .ok_or_else(|| {
                bad_request(format!(
                    "'resourceAppId' {} is not a resource of this tenant.",
                    entry.resource_app_id
                ))
            })?;
        if entry.resource_access.len() > MAX_ACCESS_PER_RESOURCE {
            return Err(bad_request("Too many entries in 'resourceAccess'."));
        }
        let mut permission = RequiredPermission {
            resource: resource.app_id.clone(),
            scopes: Vec::new(),
            roles: Vec::new(),
        };
        for access in &entry.resource_access {
            let (kind, candidates, list) = match access.kind.as_str() {
                "Role" => (
                    PermissionKind::Role,
                    resource.app_roles.clone(),
                    &mut permission.roles,
                ),
                "Scope" => (
                    PermissionKind::Scope,
                    resource_scopes(resource),
                    &mut permission.scopes,
                ),
                other => {
                    return Err(bad_request(format!(
                        "Invalid value '{other}' for 'type': Role or Scope."
                    )));
                }
            };
            let value = candidates
                .into_iter()
                .find(|value| {
                    permission_id(&resource.app_id, kind, value).eq_ignore_ascii_case(&access.id)
                })
                .ok_or_else(|| {
                    bad_request(format!(
                        "{} has no {} with id {}.",
                        resource.display_name,
                        kind.as_str(),
                        access.id
                    ))
                })?;
            if !list.contains(&value) {
                list.push(value);
            }
        }
        match permissions
            .iter_mut()
            .find(|p| p.resource.eq_ignore_ascii_case(&permission.resource))
        {
            Some(existing) => {
                existing.scopes.extend(permission.scopes);
                existing.roles.extend(permission.roles);
            }
            None => permissions.push(permission),
        }
    }
    Ok(permissions)
}

/// `keyCredentials` replacing the app's certificates: a new one carries `key` (base64 DER); an existing
/// one may be named by `keyId` alone.
fn key_credentials(
    existing: &[AppCertificate],
    keys: &[KeyCredentialIn],
    now: u64,
) -> Result<Vec<AppCertificate>, GraphError> {
    if keys.len() > MAX_PER_APP {
        return Err(bad_request(format!(
            "'keyCredentials' takes at most {MAX_PER_APP} keys."
        )));
    }
    let mut certificates = Vec::new();
    for key in keys {
        if key.kind != "AsymmetricX509Cert" || key.usage != "Verify" {
            return Err(bad_request(
                "The sandbox models key credentials of type AsymmetricX509Cert with usage Verify.",
            ));
        }
        let _ = &key.custom_key_identifier;
        let start = key
            .start_date_time
            .as_deref()
            .map(|text| parse_date_time("startDateTime", text))
            .transpose()?;
        let end = key
            .end_date_time
            .as_deref()
            .map(|text| parse_date_time("endDateTime", text))
            .transpose()?;
        let display_name = key.display_name.clone().unwrap_or_default();
        if display_name.chars().count() > MAX_NAME_CHARS {
            return Err(bad_request("'displayName' is too long."));
        }
        let certificate = match &key.key {
            Some(encoded) => {
                let der = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| bad_request("'key' must be a base64 DER certificate."))?;
                let certificate_der = rustls_pki_types::CertificateDer::from(der.as_slice());
                webpki::EndEntityCert::try_from(&certificate_der)
                    .map_err(|_| bad_request("'key' does not hold an X.509 certificate."))?;
                AppCertificate {
                    pem: pem_of(&der),
                    expires_at_unix: end,
                    key_id: key.key_id.clone().unwrap_or_else(random_guid),
                    display_name,
                    start_at_unix: start.or(Some(now)),
                }
            }
            None => {
                let wanted = key.key_id.as_deref().ok_or_else(|| {
                    bad_request("A key credential needs 'key' or a known 'keyId'.")
                })?;
                let mut kept = existing
                    .iter()
                    .find(|certificate| certificate.key_id().eq_ignore_ascii_case(wanted))
                    .cloned()
                    .ok_or_else(|| {
                        bad_request(format!("No key credential with keyId {wanted}."))
                    })?;
                if end.is_some() {
                    kept.expires_at_unix = end;
                }
                if !display_name.is_empty() {
                    kept.display_name = display_name;
                }
                kept
            }
        };
        certificates.push(certificate);
    }
    Ok(certificates)
}

/// PEM of a DER certificate.
fn pem_of(der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternate_keys_and_paths() {
        assert!(matches!(
            alternate_key("servicePrincipals(appId='abc')", "servicePrincipals"),
            Some(Ok(Key::AppId(id))) if id == "abc"
        ));
        assert!(alternate_key("servicePrincipals", "servicePrincipals").is_none());
        assert!(handles(&["applications(appId='x')".to_owned()]));
        assert!(!handles(&["applicationsX".to_owned()]));
    }

    #[test]
    fn secret_texts_have_entras_shape() {
        let text = new_secret_text();
        assert_eq!(text.len(), 40);
        assert_eq!(&text[4..6], "Q~");
        assert_ne!(text, new_secret_text());
    }
}
