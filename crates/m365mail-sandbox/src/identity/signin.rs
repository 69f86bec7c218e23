//! Checking a user's sign-in, shared by ROPC and the sign-in pages.

use crate::{
    identity::{TenantAlias, errors::EntraError},
    tenant::{Tenant, TenantModel, User},
};

/// How the password was presented: ROPC cannot perform MFA, the sign-in pages can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignInKind {
    /// `grant_type=password`: MFA-required users fail with AADSTS50076.
    PasswordGrant,
    /// A browser page: MFA is assumed to be completed there.
    Interactive,
}

/// Finds the user named by `username` for the endpoint `alias` (a tenant only sees its own users;
/// `organizations`/`common` look in every tenant).
pub(crate) fn find_user<'model>(
    model: &'model TenantModel,
    alias: &TenantAlias,
    username: &str,
) -> Result<(&'model Tenant, &'model User), EntraError> {
    match alias {
        TenantAlias::Tenant(tenant_id) => {
            let tenant = model
                .tenant(tenant_id)
                .ok_or_else(|| EntraError::tenant_not_found(tenant_id))?;
            tenant
                .user(username)
                .map(|user| (tenant, user))
                .ok_or_else(|| EntraError::user_not_found(tenant_id))
        }
        _ => model
            .find_user(username)
            .ok_or_else(|| EntraError::user_not_found(alias.path_segment())),
    }
}

/// Checks the account state and password in Entra's order: disabled, locked, password, federation,
/// expiry, then (ROPC only) MFA. `resource_app_id` appears in the MFA message.
pub(crate) fn check_sign_in(
    user: &User,
    password: &str,
    kind: SignInKind,
    resource_app_id: &str,
    base_url: &str,
) -> Result<(), EntraError> {
    check_account_usable(user)?;
    // Federated accounts have no cloud password to check: ROPC fails as a bad password (reference §11).
    if user.password != password || (user.federated && kind == SignInKind::PasswordGrant) {
        return Err(EntraError::bad_credentials());
    }
    if user.password_expired {
        return Err(EntraError::password_expired(base_url));
    }
    if user.mfa_required && kind == SignInKind::PasswordGrant {
        return Err(EntraError::mfa_required(resource_app_id));
    }
    Ok(())
}

/// Checks an already signed-in user again before tokens are issued (device code redemption, refresh):
/// disabling or locking the account after sign-in still stops it.
pub(crate) fn check_account_usable(user: &User) -> Result<(), EntraError> {
    if user.disabled {
        return Err(EntraError::user_disabled());
    }
    if user.locked {
        return Err(EntraError::user_locked());
    }
    Ok(())
}
