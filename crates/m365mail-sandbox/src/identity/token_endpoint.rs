//! `POST /{tenant}/oauth2/v2.0/token`: one function per grant.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, Method},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::{
    identity::state::{
        AuthorizationCodeGrant, DeviceGrant, DeviceState, IdentityState, RefreshGrant,
    },
    identity::{
        FormParams, TenantAlias, add_token_headers,
        client_auth::{
            PresentedCredential, PublicClientRule, TokenEndpointContext, authenticate,
            basic_credentials, presented_credential,
        },
        client_request_id,
        crypto::{b64url, sha256},
        errors::EntraError,
        is_device_code_grant, parse_form,
        scopes::{DelegatedScopes, consented_delegated_scopes, parse_app_only, parse_delegated},
        signin::{SignInKind, check_account_usable, find_user, sign_in_with_password},
        tokens::{ClientAuthMethod, DelegatedIssue, issue_app_only, issue_delegated},
    },
    sync::lock,
    tenant::{AppRegistration, Tenant, TenantModel, User},
};

/// The device-code grant type of RFC 8628.
pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The grant types the token endpoint handles, as the request counters name them.
const KNOWN_GRANT_TYPES: [&str; 6] = [
    "password",
    "client_credentials",
    "refresh_token",
    "authorization_code",
    DEVICE_CODE_GRANT,
    "device_code",
];

/// The counter key for a request's `grant_type`: a known name, `(none)`, or `(other)`.
fn counted_grant_type(grant_type: Option<&str>) -> &'static str {
    match grant_type {
        None => "(none)",
        Some(sent) => KNOWN_GRANT_TYPES
            .into_iter()
            .find(|known| *known == sent)
            .unwrap_or("(other)"),
    }
}

/// `GET` (or any non-POST verb) on the token endpoint: AADSTS900561.
pub(crate) async fn token_with_wrong_method(
    State(state): State<Arc<IdentityState>>,
    method: Method,
) -> Response {
    state.count_endpoint("token");
    EntraError::post_only(method.as_str()).into_response_at(state.clock.as_ref())
}

/// The token endpoint.
pub(crate) async fn token(
    State(state): State<Arc<IdentityState>>,
    Path(tenant_segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.count_endpoint("token");
    let params = parse_form(&body);
    let grant_type = params.get("grant_type").unwrap_or("(none)");
    state.count_grant(counted_grant_type(params.get("grant_type")));
    let request_id = client_request_id(&headers);
    let client_id = params.get("client_id").unwrap_or("(none)");
    let refusal = state
        .take_token_fault(params.get("grant_type"))
        .and_then(|fault| fault.to_entra_error());
    let outcome = match refusal {
        Some(error) => Err(error),
        None => handle_token_request(&state, &tenant_segment, &params, &headers),
    };
    // Only identifiers and outcomes are logged: never passwords, secrets, assertions or tokens.
    let mut response = match outcome {
        Ok(response) => {
            tracing::debug!(tenant = %tenant_segment, grant_type, client_id, "token issued");
            Json(response).into_response()
        }
        Err(error) => {
            tracing::debug!(
                tenant = %tenant_segment,
                grant_type,
                client_id,
                error = error.error,
                code = error.code,
                "token request refused"
            );
            error.into_response_correlated(state.clock.as_ref(), request_id.as_deref())
        }
    };
    add_token_headers(&mut response, request_id.as_deref());
    response
}

fn handle_token_request(
    state: &IdentityState,
    tenant_segment: &str,
    params: &FormParams,
    headers: &HeaderMap,
) -> Result<Value, EntraError> {
    params.refuse_duplicates()?;
    let directory = lock(&state.directory);
    let alias = TenantAlias::resolve(&directory, tenant_segment)?;
    let grant_type = params.require("grant_type")?;
    let basic = basic_credentials(headers);
    let client_id = match params.get("client_id") {
        Some(client_id) => client_id.to_string(),
        // client_secret_basic may carry the client id only in the header.
        None => basic
            .as_ref()
            .map(|(client_id, _)| client_id.clone())
            .filter(|client_id| !client_id.is_empty())
            .ok_or_else(|| EntraError::missing_parameter("client_id"))?,
    };
    let request = TokenRequest {
        state,
        directory: &directory,
        alias: &alias,
        params,
        client_id: &client_id,
        credential: presented_credential(params, basic.map(|(_, secret)| secret))?,
    };
    match grant_type {
        "password" => request.password(),
        "client_credentials" => request.client_credentials(),
        "refresh_token" => request.refresh_token(),
        grant if is_device_code_grant(grant) => request.device_code(),
        "authorization_code" => request.authorization_code(),
        other => Err(EntraError::unsupported_grant_type(other)),
    }
}

/// One token request, with the directory locked for its (synchronous) duration.
struct TokenRequest<'a> {
    state: &'a IdentityState,
    directory: &'a TenantModel,
    alias: &'a TenantAlias,
    params: &'a FormParams,
    client_id: &'a str,
    credential: PresentedCredential,
}

impl<'a> TokenRequest<'a> {
    /// The app and its home tenant as seen from this endpoint: a tenant endpoint only sees its own
    /// apps (AADSTS700016 otherwise); a disabled app gets AADSTS7000112.
    fn app(&self) -> Result<(&'a Tenant, &'a AppRegistration), EntraError> {
        self.alias.enabled_app(self.directory, self.client_id)
    }

    fn authenticate(
        &self,
        tenant: &Tenant,
        app: &AppRegistration,
        rule: PublicClientRule,
    ) -> Result<ClientAuthMethod, EntraError> {
        let context = TokenEndpointContext {
            base_url: &self.state.base_url,
            alias: self.alias,
            now_unix: self.state.now_unix(),
            seen_assertions: self
                .state
                .reject_replayed_assertions
                .then_some(&self.state.seen_assertions),
        };
        authenticate(app, tenant, &self.credential, rule, &context)
    }

    fn client_info(&self) -> bool {
        self.params.get("client_info") == Some("1")
    }

    /// Looks up a presented refresh token, authorization code or device code and checks, in Entra's
    /// order: issued to this client (else `refusals.unknown`), not spent (`spent` says why if it is),
    /// not expired, and issued in this endpoint's tenant when both name one.
    fn redeemable<'g, G: IssuedGrant>(
        &self,
        issued: &'g mut HashMap<String, G>,
        presented: &str,
        app: &AppRegistration,
        spent: impl FnOnce(&G) -> Option<EntraError>,
        refusals: GrantRefusals,
    ) -> Result<&'g mut G, EntraError> {
        let grant = issued
            .get_mut(presented)
            .filter(|grant| grant.client_id().eq_ignore_ascii_case(&app.client_id))
            .ok_or_else(refusals.unknown)?;
        if let Some(error) = spent(grant) {
            return Err(error);
        }
        if grant.expires_at() <= self.state.now_unix() {
            return Err((refusals.expired)());
        }
        if let (TenantAlias::Tenant(tenant_id), Some(issued_in)) = (self.alias, grant.tenant_id())
            && !tenant_id.eq_ignore_ascii_case(issued_in)
        {
            return Err((refusals.other_tenant)());
        }
        Ok(grant)
    }

    /// The user a redeemed grant was issued for, if still there and allowed to sign in.
    fn grant_user(
        &self,
        upn: &str,
        unknown: fn() -> EntraError,
    ) -> Result<(&'a Tenant, &'a User), EntraError> {
        let (tenant, user) = self.directory.find_user(upn).ok_or_else(unknown)?;
        check_account_usable(user)?;
        Ok((tenant, user))
    }

    /// The common end of every delegated grant: parse `scope` in the user's tenant, run the grant's
    /// own check on the parsed scopes, require consent, issue the tokens.
    fn issue_to_user(
        &self,
        user_grant: UserGrant<'_>,
        check: impl FnOnce(&DelegatedScopes) -> Result<(), EntraError>,
    ) -> Result<Value, EntraError> {
        let UserGrant {
            tenant,
            app,
            user,
            scope,
            nonce,
            method,
            mfa_performed,
        } = user_grant;
        let scopes = parse_delegated(tenant, scope)?;
        check(&scopes)?;
        let granted = consented_delegated_scopes(app, &scopes.selection, &user.upn)?;
        issue_delegated(
            self.state,
            DelegatedIssue {
                tenant,
                app,
                user,
                scopes: &scopes,
                granted,
                requested_scope: scope,
                client_info: self.client_info(),
                nonce,
                method,
                mfa_performed,
            },
        )
    }

    /// ROPC (reference §5.1).
    fn password(&self) -> Result<Value, EntraError> {
        if matches!(self.alias, TenantAlias::Common | TenantAlias::Consumers) {
            return Err(EntraError::grant_not_supported_on_endpoint(
                self.alias.path_segment(),
            ));
        }
        let username = self.params.require("username")?;
        let password = self.params.require("password")?;
        let scope = self.params.require("scope")?;
        let (app_tenant, app) = self.app()?;
        let method =
            self.authenticate(app_tenant, app, PublicClientRule::NeedsPublicClientFlows)?;
        let (tenant, user) = find_user(self.directory, self.alias, username)?;
        if tenant.id != app_tenant.id {
            return Err(EntraError::app_not_found(&app.client_id, &tenant.id));
        }
        let user_grant = UserGrant {
            tenant,
            app,
            user,
            scope,
            nonce: None,
            method,
            mfa_performed: false,
        };
        self.issue_to_user(user_grant, |scopes| {
            sign_in_with_password(
                self.state,
                user,
                password,
                SignInKind::PasswordGrant,
                &scopes.selection.resource.app_id,
            )
        })
    }

    /// Client credentials with a secret or a certificate (reference §5.2, §5.3).
    fn client_credentials(&self) -> Result<Value, EntraError> {
        if self.alias.is_multi_tenant() {
            return Err(EntraError::tenant_required(self.alias.path_segment()));
        }
        let scope = self.params.require("scope")?;
        let (tenant, app) = self.app()?;
        let method = self.authenticate(tenant, app, PublicClientRule::CredentialRequired)?;
        if app.service_principal_id().is_none() {
            return Err(EntraError::missing_service_principal(
                &app.client_id,
                &tenant.id,
            ));
        }
        let selection = parse_app_only(tenant, scope)?;
        issue_app_only(self.state, tenant, app, &selection, method)
    }

    /// Refresh (reference §5.5): rotating, the old token stays valid until revoked or expired.
    fn refresh_token(&self) -> Result<Value, EntraError> {
        let refresh_token = self.params.require("refresh_token")?;
        let (app_tenant, app) = self.app()?;
        let method = self.authenticate(app_tenant, app, PublicClientRule::NativeAppsAllowed)?;
        let (user_upn, original_scope, mfa_performed) = {
            let mut grants = lock(&self.state.grants);
            let grant = self.redeemable(
                &mut grants.refresh_tokens,
                refresh_token,
                app,
                |grant| grant.revoked.then(EntraError::grant_revoked),
                GrantRefusals {
                    unknown: EntraError::invalid_refresh_token,
                    expired: EntraError::refresh_token_expired,
                    other_tenant: EntraError::invalid_refresh_token,
                },
            )?;
            (
                grant.user_upn.clone(),
                grant.scope.clone(),
                grant.mfa_performed,
            )
        };
        let (tenant, user) = self.grant_user(&user_upn, EntraError::invalid_refresh_token)?;
        let user_grant = UserGrant {
            tenant,
            app,
            user,
            scope: self.params.get("scope").unwrap_or(&original_scope),
            nonce: None,
            method,
            mfa_performed,
        };
        self.issue_to_user(user_grant, |scopes| {
            // MFA required since a password-only sign-in: the refresh token no longer suffices.
            if user.mfa_required && !mfa_performed {
                return Err(EntraError::mfa_required(&scopes.selection.resource.app_id));
            }
            Ok(())
        })
    }

    /// Device code polling (reference §5.4).
    fn device_code(&self) -> Result<Value, EntraError> {
        let device_code = self.params.require("device_code")?;
        let (app_tenant, app) = self.app()?;
        let method =
            self.authenticate(app_tenant, app, PublicClientRule::NeedsPublicClientFlows)?;
        let (approved_upn, scope) = {
            let mut grants = lock(&self.state.grants);
            let grant = self.redeemable(
                &mut grants.device_codes,
                device_code,
                app,
                |_| None,
                GrantRefusals {
                    unknown: EntraError::bad_verification_code,
                    expired: EntraError::device_code_expired,
                    other_tenant: EntraError::bad_verification_code,
                },
            )?;
            // However fast the client polls: Entra answers `authorization_pending`, not `slow_down`
            // (that one only as an injected fault, see `TokenFault::SlowDown`).
            match &grant.state {
                DeviceState::Pending => return Err(EntraError::authorization_pending()),
                DeviceState::Declined => return Err(EntraError::authorization_declined()),
                DeviceState::Redeemed => return Err(EntraError::device_code_already_used()),
                DeviceState::Approved { upn } => {
                    let approved = (upn.clone(), grant.scope.clone());
                    grant.state = DeviceState::Redeemed;
                    approved
                }
            }
        };
        let (tenant, user) = self.grant_user(&approved_upn, EntraError::bad_verification_code)?;
        let user_grant = UserGrant {
            tenant,
            app,
            user,
            scope: &scope,
            nonce: None,
            method,
            mfa_performed: user.mfa_required,
        };
        self.issue_to_user(user_grant, |_| Ok(()))
    }

    /// Authorization code redemption with PKCE (reference §5.6).
    fn authorization_code(&self) -> Result<Value, EntraError> {
        let code = self.params.require("code")?;
        let redirect_uri = self.params.require("redirect_uri")?;
        let (app_tenant, app) = self.app()?;
        let method = self.authenticate(app_tenant, app, PublicClientRule::NativeAppsAllowed)?;
        let (user_upn, scope, nonce) = {
            let mut grants = lock(&self.state.grants);
            let grant = self.redeemable(
                &mut grants.authorization_codes,
                code,
                app,
                |grant| grant.redeemed.then(EntraError::code_already_redeemed),
                GrantRefusals {
                    unknown: EntraError::invalid_authorization_code,
                    expired: EntraError::authorization_code_expired,
                    other_tenant: EntraError::code_redeemed_against_wrong_tenant,
                },
            )?;
            if grant.redirect_uri != redirect_uri {
                return Err(EntraError::redirect_uri_mismatch(
                    redirect_uri,
                    &app.client_id,
                ));
            }
            if let Some((challenge, challenge_method)) = &grant.code_challenge {
                let verifier = self.params.require("code_verifier")?;
                let computed = if challenge_method == "S256" {
                    b64url(&sha256(verifier.as_bytes()))
                } else {
                    verifier.to_string()
                };
                if computed != *challenge {
                    return Err(EntraError::pkce_mismatch());
                }
            }
            grant.redeemed = true;
            (
                grant.user_upn.clone(),
                grant.scope.clone(),
                grant.nonce.clone(),
            )
        };
        let (tenant, user) = self.grant_user(&user_upn, EntraError::invalid_authorization_code)?;
        let user_grant = UserGrant {
            tenant,
            app,
            user,
            scope: self.params.get("scope").unwrap_or(&scope),
            nonce: nonce.as_deref(),
            method,
            mfa_performed: user.mfa_required,
        };
        self.issue_to_user(user_grant, |_| Ok(()))
    }
}

/// A delegated grant ready to be issued: whose, for which app, and how it was obtained.
struct UserGrant<'s> {
    tenant: &'s Tenant,
    app: &'s AppRegistration,
    user: &'s User,
    /// The requested scope string (also remembered with the refresh token).
    scope: &'s str,
    nonce: Option<&'s str>,
    method: ClientAuthMethod,
    mfa_performed: bool,
}

/// The answers for each way a presented grant fails, in the codes Entra uses for that grant type.
struct GrantRefusals {
    unknown: fn() -> EntraError,
    expired: fn() -> EntraError,
    other_tenant: fn() -> EntraError,
}

/// What the token endpoint checks on every grant it redeems.
trait IssuedGrant {
    fn client_id(&self) -> &str;
    /// The tenant it was issued in (`None`: started over organizations/common, tenant unknown yet).
    fn tenant_id(&self) -> Option<&str>;
    fn expires_at(&self) -> u64;
}

impl IssuedGrant for RefreshGrant {
    fn client_id(&self) -> &str {
        &self.client_id
    }
    fn tenant_id(&self) -> Option<&str> {
        Some(&self.tenant_id)
    }
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

impl IssuedGrant for AuthorizationCodeGrant {
    fn client_id(&self) -> &str {
        &self.client_id
    }
    fn tenant_id(&self) -> Option<&str> {
        Some(&self.tenant_id)
    }
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

impl IssuedGrant for DeviceGrant {
    fn client_id(&self) -> &str {
        &self.client_id
    }
    fn tenant_id(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}
