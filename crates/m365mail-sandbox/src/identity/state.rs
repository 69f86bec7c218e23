//! The identity service's run-time state: issued grants (refresh tokens, device codes, authorization
//! codes), request counters, the signing key, injected token faults and smart-lockout counters. The
//! directory (tenant model) and the clock are shared with the other services. Locks are std mutexes held
//! only for short, non-async sections.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::{
    Lifetimes, SmartLockout,
    clock::Clock,
    faults::FaultQueue,
    identity::{
        TokenFault, client_auth::SeenAssertions, crypto::SigningKey, signin::FailedSignIns,
    },
    sync::lock,
    tenant::TenantModel,
};

pub(crate) struct IdentityState {
    /// The directory, shared with the other services.
    pub(crate) directory: Arc<Mutex<TenantModel>>,
    pub(crate) grants: Mutex<Grants>,
    pub(crate) stats: Mutex<RequestStats>,
    pub(crate) signing_key: SigningKey,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) clock: Arc<dyn Clock>,
    /// `https://127.0.0.1:port/`, always with a trailing slash.
    pub(crate) base_url: Url,
    /// Faults to answer the next token requests with.
    pub(crate) token_faults: FaultQueue<TokenFault>,
    /// Faults to answer the next Microsoft Graph requests with (the Graph routes share this listener).
    pub(crate) graph_faults: FaultQueue<crate::graph::GraphFault>,
    /// [`crate::SandboxConfig::reject_replayed_assertions`].
    pub(crate) reject_replayed_assertions: bool,
    /// Certificate assertion ids already accepted (used only when replays are refused).
    pub(crate) seen_assertions: Mutex<SeenAssertions>,
    /// [`crate::SandboxConfig::smart_lockout`].
    pub(crate) smart_lockout: SmartLockout,
    /// Lower-case user object id → failed password sign-ins (smart lockout).
    pub(crate) sign_in_failures: Mutex<HashMap<String, FailedSignIns>>,
}

impl IdentityState {
    /// Counts a request to one endpoint. Keys are `'static`: never a string a client sent.
    pub(crate) fn count_endpoint(&self, endpoint: &'static str) {
        let mut stats = lock(&self.stats);
        stats.total_requests += 1;
        *stats.by_endpoint.entry(endpoint.to_string()).or_default() += 1;
    }

    /// Counts a token request under a grant type name the sandbox chose (see
    /// [`RequestStats::by_grant_type`]); `'static` so a client cannot make it keep new keys.
    pub(crate) fn count_grant(&self, grant_type: &'static str) {
        *lock(&self.stats)
            .by_grant_type
            .entry(grant_type.to_string())
            .or_default() += 1;
    }

    /// The bearer check of every resource the sandbox serves, with this service's key and clock, against
    /// `directory` (the caller holds its lock, often for a mailbox check right after).
    pub(crate) fn check_bearer(
        &self,
        directory: &TenantModel,
        token: &str,
        requirement: crate::identity::bearer::Requirement,
    ) -> Result<crate::identity::bearer::Principal, crate::identity::bearer::BearerRefusal> {
        crate::identity::bearer::validate_bearer(
            &self.signing_key,
            directory,
            self.now_unix(),
            token,
            requirement,
        )
    }

    /// Takes one injected fault that applies to this `grant_type`, if any remain.
    pub(crate) fn take_token_fault(&self, grant_type: Option<&str>) -> Option<TokenFault> {
        self.token_faults.take(|fault| fault.applies_to(grant_type))
    }

    /// The lifetime of an access token being issued: an injected [`TokenFault::ShortLived`]'s, else drawn.
    pub(crate) fn access_token_seconds(&self) -> u64 {
        match self
            .token_faults
            .take(|fault| matches!(fault, TokenFault::ShortLived { .. }))
        {
            Some(TokenFault::ShortLived { lifetime_seconds }) => lifetime_seconds,
            _ => self.lifetimes.access_token.draw_seconds(),
        }
    }

    pub(crate) fn now_unix(&self) -> u64 {
        self.clock.unix_seconds()
    }

    /// Unix time `lifetime` from now, saturating: a lifetime too large for the clock (e.g.
    /// `--access-token-lifetime 18446744073709551615`) means "never", not an overflow.
    pub(crate) fn unix_after(&self, lifetime: std::time::Duration) -> u64 {
        self.now_unix().saturating_add(lifetime.as_secs())
    }

    /// The base URL as a string ending in `/`.
    pub(crate) fn base(&self) -> &str {
        self.base_url.as_str()
    }
}

/// Request counters, read through the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStats {
    /// Every counted request (identity endpoints; admin calls are not counted).
    pub total_requests: u64,
    /// Per endpoint: `openid-configuration`, `keys`, `instance-discovery`, `userrealm`, `token`,
    /// `devicecode`, `authorize`, `devicelogin`, `adminconsent`, and `graph` (every Microsoft Graph request
    /// under `/v1.0/`).
    pub by_endpoint: BTreeMap<String, u64>,
    /// Token requests per `grant_type`: the values the token endpoint knows as sent (`password`,
    /// `client_credentials`, `refresh_token`, `authorization_code`,
    /// `urn:ietf:params:oauth:grant-type:device_code`, `device_code`); missing or empty → `(none)`;
    /// any other value → `(other)`, so a client cannot make the counters grow.
    pub by_grant_type: BTreeMap<String, u64>,
}

impl RequestStats {
    /// Requests to one endpoint (see [`RequestStats::by_endpoint`]).
    pub fn endpoint(&self, endpoint: &str) -> u64 {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0)
    }

    /// Token requests with one grant type.
    pub fn grant(&self, grant_type: &str) -> u64 {
        self.by_grant_type.get(grant_type).copied().unwrap_or(0)
    }
}

#[derive(Default)]
pub(crate) struct Grants {
    pub(crate) refresh_tokens: HashMap<String, RefreshGrant>,
    /// Keyed by device code.
    pub(crate) device_codes: HashMap<String, DeviceGrant>,
    pub(crate) authorization_codes: HashMap<String, AuthorizationCodeGrant>,
}

impl Grants {
    pub(crate) fn device_by_user_code_mut(&mut self, user_code: &str) -> Option<&mut DeviceGrant> {
        let wanted = normalize_user_code(user_code);
        self.device_codes
            .values_mut()
            .find(|grant| grant.user_code == wanted)
    }

    /// Marks every refresh token of a user as revoked (password change, admin revocation).
    pub(crate) fn revoke_user(&mut self, user_object_id: &str) -> usize {
        let mut revoked = 0;
        for grant in self.refresh_tokens.values_mut() {
            if grant.user_object_id.eq_ignore_ascii_case(user_object_id) && !grant.revoked {
                grant.revoked = true;
                revoked += 1;
            }
        }
        revoked
    }
}

/// User codes are compared without case, spaces or dashes, as people type them.
pub(crate) fn normalize_user_code(user_code: &str) -> String {
    user_code
        .chars()
        .filter(|character| character.is_ascii_alphanumeric())
        .map(|character| character.to_ascii_uppercase())
        .collect()
}

pub(crate) struct RefreshGrant {
    pub(crate) user_object_id: String,
    pub(crate) user_upn: String,
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    /// The original request's scope string, reused when a refresh request names no scope.
    pub(crate) scope: String,
    pub(crate) expires_at: u64,
    pub(crate) revoked: bool,
    /// Whether the sign-in behind this grant performed MFA (interactive flows); a ROPC grant of a user
    /// who later needs MFA fails to refresh with AADSTS50076.
    pub(crate) mfa_performed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceState {
    Pending,
    Approved { upn: String },
    Declined,
    Redeemed,
}

pub(crate) struct DeviceGrant {
    pub(crate) user_code: String,
    pub(crate) client_id: String,
    /// Tenant id when the flow started on a tenant-specific endpoint; `None` for organizations/common.
    pub(crate) tenant_id: Option<String>,
    pub(crate) scope: String,
    pub(crate) expires_at: u64,
    pub(crate) state: DeviceState,
}

pub(crate) struct AuthorizationCodeGrant {
    pub(crate) client_id: String,
    pub(crate) tenant_id: String,
    pub(crate) user_upn: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: String,
    pub(crate) code_challenge: Option<(String, String)>,
    pub(crate) nonce: Option<String>,
    pub(crate) expires_at: u64,
    pub(crate) redeemed: bool,
}
