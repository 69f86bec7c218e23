//! Checking a user's sign-in, shared by ROPC and the sign-in pages.

use crate::{
    identity::state::IdentityState,
    identity::{TenantAlias, errors::EntraError},
    sync::lock,
    tenant::{Tenant, TenantModel, User},
};

/// A user's failed password sign-ins since the last success, and the smart lockout they caused.
#[derive(Debug, Default)]
pub(crate) struct FailedSignIns {
    in_a_row: u32,
    /// Unix time the lock ends.
    locked_until: Option<u64>,
}

/// Checks a presented password as [`check_sign_in`] does, with Entra's smart lockout
/// ([`crate::SmartLockout`]) around it: a locked account is refused with AADSTS50053 whatever the
/// password, a wrong password counts towards the lock, a right one resets the count. Counted per
/// directory user, so the map holds at most one entry per user.
pub(crate) fn sign_in_with_password(
    state: &IdentityState,
    user: &User,
    password: &str,
    kind: SignInKind,
    resource_app_id: &str,
) -> Result<(), EntraError> {
    check_account_usable(user)?;
    let lockout = &state.smart_lockout;
    if lockout.threshold > 0 {
        let now = state.now_unix();
        let mut failures = lock(&state.sign_in_failures);
        let key = user.object_id.to_ascii_lowercase();
        let record = failures.entry(key.clone()).or_default();
        if record.locked_until.is_some_and(|until| now < until) {
            return Err(EntraError::user_locked());
        }
        if user.password == password {
            failures.remove(&key);
        } else {
            record.in_a_row += 1;
            if record.in_a_row >= lockout.threshold {
                record.in_a_row = 0;
                record.locked_until = Some(now.saturating_add(lockout.duration.as_secs()));
            }
        }
    }
    check_sign_in(user, password, kind, resource_app_id, state.base())
}

/// Ends a smart lockout and forgets the failures (an admin unlock).
pub(crate) fn clear_failed_sign_ins(state: &IdentityState, user_object_id: &str) {
    lock(&state.sign_in_failures).remove(&user_object_id.to_ascii_lowercase());
}

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
