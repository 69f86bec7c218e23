//! The run-time admin API: Rust methods on [`AdminHandle`], and the same operations as JSON over HTTP
//! under `/_sandbox/admin/` (for the CLI, curl and the Python tests).
//!
//! HTTP routes (all JSON; errors answer `{"error": "not_found"|"conflict"|"invalid_request", "message": …}`
//! with 404, 409 or 400). There is no authentication: the sandbox listens on loopback only. A body sent
//! to an operation that takes none (`–` below) is read and ignored, so `curl -d '{}'` works over
//! HTTP/2 too; a body over [`crate::MAX_REQUEST_BODY_BYTES`] gets the 413 Entra error JSON.
//!
//! | Method and path | Body | Answer |
//! |---|---|---|
//! | `GET /_sandbox/admin/stats` | – | [`RequestStats`] |
//! | `POST /_sandbox/admin/stats/reset` | – | `{}` |
//! | `POST /_sandbox/admin/faults/token` | `{"kind": "throttled", "retry_after_seconds": 2, "count": 1}` (kinds: [`TokenFault`]: `throttled`, `temporarily_unavailable`, `server_error`, `slow_down`) | `{}` |
//! | `POST /_sandbox/admin/faults/clear` | – | `{}` |
//! | `POST /_sandbox/admin/faults/graph` | `{"fault": "throttled", "retry_after_seconds": 2, "count": 1}` (faults: [`GraphFault`]: `throttled` → 429 `ApplicationThrottled`, `unavailable` → 503 `serviceNotAvailable`, both with `Retry-After`, default 1 s; `sync_state_not_found` → 410 `syncStateNotFound` for the next delta requests that carry a token; `count` default 1) | `{"fault", "count"}` |
//! | `POST /_sandbox/admin/faults/graph/clear` | – | `{}` |
//! | `GET /_sandbox/admin/device-codes` | – | `[`[`PendingDeviceCode`]`]` |
//! | `POST /_sandbox/admin/device-codes/{user_code}/approve` | `{"username": upn}` | `{"user_code", "status": "approved"}` |
//! | `POST /_sandbox/admin/device-codes/{user_code}/decline` | – | `{"user_code", "status": "declined"}` |
//! | `POST /_sandbox/admin/users/{upn}` | [`UserUpdate`] | [`UserStatus`] |
//! | `POST /_sandbox/admin/users/{upn}/revoke-refresh-tokens` | – | `{"revoked": n}` |
//! | `POST /_sandbox/admin/apps/{client_id}/secrets/expire` | `{"secret_id": id}` (optional; all if absent) | `{"expired": n}` |
//! | `POST /_sandbox/admin/apps/{client_id}/consent` | [`ConsentChange`] | `{}` |
//! | `POST /_sandbox/admin/apps/{client_id}/consent/revoke` | [`ConsentChange`] (`scopes` ignored; fields optional) | `{"removed": n}` |
//! | `POST /_sandbox/admin/apps/{client_id}/app-roles` | [`AppRolesChange`] | `{}` |
//! | `POST /_sandbox/admin/apps/{client_id}/app-roles/revoke` | [`AppRolesChange`] (`roles` ignored; `resource` optional) | `{"removed": n}` |
//! | `POST /_sandbox/admin/apps/{client_id}/enabled` | `{"enabled": bool}` | `{}` |
//! | `GET`/`POST /_sandbox/admin/mailboxes/{address}/cas-mailbox` | [`CasMailbox`] | [`CasMailbox`] |
//! | `/_sandbox/admin/exchange/…`, `…/mailboxes/{address}/permissions`, `…/recipient-permissions` | see [`exchange`](self#exchange-online) | the Exchange Online cmdlets |
//!
//! # Exchange Online
//!
//! `New-ServicePrincipal`, `Add-MailboxPermission`, `Add-RecipientPermission`, `Set-TransportConfig` and
//! their `Get-`/`Remove-` siblings: [`AdminHandle::new_service_principal`] and the methods after it, and
//! these routes (JSON keys are the cmdlets' parameter names):
//!
//! | Method and path | Body | Answer |
//! |---|---|---|
//! | `POST /_sandbox/admin/exchange/service-principals` | `{"AppId", "ObjectId", "DisplayName"?}` | 201 [`ExchangeServicePrincipalInfo`]; 409 when the AppId is registered |
//! | `GET /_sandbox/admin/exchange/service-principals[/{identity}]` | – | `[`[`ExchangeServicePrincipalInfo`]`]` / one |
//! | `POST /_sandbox/admin/exchange/service-principals/{identity}/remove` | – | `{"removed": 1}` |
//! | `GET /_sandbox/admin/exchange/service-principals/{identity}/authorization[?resource=mailbox]` | – | [`ServicePrincipalAuthorization`] |
//! | `GET`/`POST /_sandbox/admin/exchange/transport-config` | [`TransportConfig`] | [`TransportConfig`] |
//! | `GET /_sandbox/admin/mailboxes/{address}/permissions` | – | `[`[`MailboxPermission`]`]` |
//! | `POST /_sandbox/admin/mailboxes/{address}/permissions[/remove]` | `{"User", "AccessRights": ["FullAccess"]}` | the list / `{"removed": n}` |
//! | `GET /_sandbox/admin/mailboxes/{address}/recipient-permissions` | – | `[`[`RecipientPermission`]`]` |
//! | `POST /_sandbox/admin/mailboxes/{address}/recipient-permissions[/remove]` | `{"Trustee", "AccessRights": ["SendAs"]}` | the list / `{"removed": n}` |

mod exchange;

pub use exchange::{
    ExchangeServicePrincipalInfo, MailboxPermission, RecipientPermission,
    ServicePrincipalAuthorization, TransportConfig,
};

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;

pub use crate::graph::GraphFault;
pub use crate::identity::TokenFault;
use crate::{
    SandboxError,
    identity::state::{DeviceState, IdentityState, RequestStats},
    identity::{
        devicecode::{DeviceDecision, decide},
        signin::clear_failed_sign_ins,
    },
    sync::lock,
    tenant::{AppRoleGrant, DelegatedGrant, TenantModel, User},
};

/// A mailbox's protocol switches, shaped like Exchange's `Set-CASMailbox` / `Get-CASMailbox` parameters (the
/// JSON keys are the PowerShell parameter names); absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasMailbox {
    /// `-ImapEnabled`.
    #[serde(
        rename = "ImapEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub imap_enabled: Option<bool>,
    /// `-PopEnabled`.
    #[serde(
        rename = "PopEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pop_enabled: Option<bool>,
    /// `-SmtpClientAuthenticationDisabled` (true switches SMTP AUTH off for the mailbox).
    #[serde(
        rename = "SmtpClientAuthenticationDisabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub smtp_client_authentication_disabled: Option<bool>,
}

/// Changes to a user's flags; absent fields stay as they are.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// MFA required (ROPC → AADSTS50076).
    #[serde(default)]
    pub mfa_required: Option<bool>,
    /// Disabled (AADSTS50057).
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Locked (AADSTS50053). `false` also ends a smart lockout ([`crate::SmartLockout`]).
    #[serde(default)]
    pub locked: Option<bool>,
    /// Password expired (AADSTS50055).
    #[serde(default)]
    pub password_expired: Option<bool>,
    /// Federated (ROPC → AADSTS50126).
    #[serde(default)]
    pub federated: Option<bool>,
    /// Global administrator (may grant admin consent).
    #[serde(default)]
    pub global_admin: Option<bool>,
    /// A new password. Like a reset in Entra, it revokes the user's refresh tokens (AADSTS50173).
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdate")
            .field("mfa_required", &self.mfa_required)
            .field("disabled", &self.disabled)
            .field("locked", &self.locked)
            .field("password_expired", &self.password_expired)
            .field("federated", &self.federated)
            .field("global_admin", &self.global_admin)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A user's state as the admin API reports it (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatus {
    /// UPN.
    pub upn: String,
    /// Object id.
    pub object_id: String,
    /// MFA required.
    pub mfa_required: bool,
    /// Disabled.
    pub disabled: bool,
    /// Locked.
    pub locked: bool,
    /// Password expired.
    pub password_expired: bool,
    /// Federated.
    pub federated: bool,
    /// Global administrator.
    pub global_admin: bool,
}

impl From<&User> for UserStatus {
    fn from(user: &User) -> Self {
        Self {
            upn: user.upn.clone(),
            object_id: user.object_id.clone(),
            mfa_required: user.mfa_required,
            disabled: user.disabled,
            locked: user.locked,
            password_expired: user.password_expired,
            federated: user.federated,
            global_admin: user.global_admin,
        }
    }
}

/// A delegated consent to grant or revoke.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    /// Resource app id or identifier URI (`https://outlook.office.com`); for revocation, absent means
    /// every resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// Short scope names (`IMAP.AccessAsUser.All`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A user's own consent (UPN); absent means admin consent for all users.
    #[serde(default)]
    pub user: Option<String>,
}

/// App roles to grant or revoke.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRolesChange {
    /// Resource app id or identifier URI; for revocation, absent means every resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// Role values (`IMAP.AccessAsApp`).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A device code waiting for the user (no secret device code in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDeviceCode {
    /// The code the user types.
    pub user_code: String,
    /// The client that asked.
    pub client_id: String,
    /// The requested scope string.
    pub scope: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// A fault inside a mail session ([`AdminHandle::inject_mail_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailFault {
    /// The next command is answered with the service's transient failure (`NO`, `-ERR`, `451`).
    FailNext,
    /// A new connection answers this many commands, then drops with the next one unanswered.
    DropAfterCommands(u32),
    /// The next command of a signed-in session finds its token expired.
    ExpireToken,
}

/// Runtime control of a running sandbox; cheap to clone.
#[derive(Clone)]
pub struct AdminHandle {
    state: Arc<IdentityState>,
    /// The Exchange service; the HTTP routes that reach mailboxes add it from the router's extension.
    exchange: Option<Arc<crate::exchange::ExchangeState>>,
}

impl std::fmt::Debug for AdminHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHandle")
            .field("base_url", &self.state.base_url.as_str())
            .finish()
    }
}

impl AdminHandle {
    pub(crate) fn new(state: Arc<IdentityState>) -> Self {
        Self {
            state,
            exchange: None,
        }
    }

    pub(crate) fn with_exchange(mut self, exchange: Arc<crate::exchange::ExchangeState>) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// Delivers a message (RFC 5322 bytes; bare LF line endings become CRLF) to a mailbox of the tenant, as
    /// mail arriving from outside would; returns its uid (POP3 UIDL).
    pub fn deliver_message(&self, mailbox: &str, message: &[u8]) -> Result<String, SandboxError> {
        self.deliver_to_folder(mailbox, "INBOX", message)
    }

    /// Delivers a message to a folder of a mailbox (`INBOX`, `Sent Items`, `Archive`, …); returns its uid.
    pub fn deliver_to_folder(
        &self,
        mailbox: &str,
        folder: &str,
        message: &[u8],
    ) -> Result<String, SandboxError> {
        let exchange = self.exchange.as_ref().ok_or_else(|| {
            SandboxError::InvalidRequest("this handle has no Exchange service".into())
        })?;
        let known = lock(&self.state.directory).tenants.iter().any(|t| {
            t.mailboxes
                .iter()
                .any(|m| m.address.eq_ignore_ascii_case(mailbox))
        });
        if !known {
            return Err(SandboxError::not_found("mailbox", mailbox));
        }
        let now = i64::try_from(self.state.clock.unix_seconds()).unwrap_or(i64::MAX);
        lock(&exchange.store)
            .deliver_to(mailbox, folder, message, now)
            .map_err(|_| SandboxError::not_found("folder", folder))
    }

    /// The folders of a mailbox: name, UIDVALIDITY, UIDNEXT and message count.
    pub fn mailbox_folders(&self, mailbox: &str) -> Vec<FolderStatus> {
        self.exchange
            .as_ref()
            .map(|e| {
                lock(&e.store)
                    .folders(mailbox)
                    .iter()
                    .map(|f| FolderStatus {
                        name: f.name.clone(),
                        special_use: f.special_use.map(str::to_owned),
                        uid_validity: f.uid_validity,
                        uid_next: f.uid_next,
                        messages: f.messages.len(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets a folder's UIDVALIDITY (clients must resync the folder).
    pub fn set_uid_validity(
        &self,
        mailbox: &str,
        folder: &str,
        uid_validity: u32,
    ) -> Result<(), SandboxError> {
        let exchange = self.exchange.as_ref().ok_or_else(|| {
            SandboxError::InvalidRequest("this handle has no Exchange service".into())
        })?;
        lock(&exchange.store)
            .set_uid_validity(mailbox, folder, uid_validity)
            .map_err(|_| SandboxError::not_found("folder", folder))
    }

    /// Injects a session fault into a mail service (`imap`, `pop3`, `smtp`) for its next `count` sessions
    /// (commands) — as `POST /_sandbox/admin/faults/mail/{service}` does.
    pub fn inject_mail_fault(
        &self,
        service: &str,
        fault: MailFault,
        count: u32,
    ) -> Result<(), SandboxError> {
        let exchange = self.exchange.as_ref().ok_or_else(|| {
            SandboxError::InvalidRequest("this handle has no Exchange service".into())
        })?;
        let queue = exchange
            .session_faults
            .get(service)
            .ok_or_else(|| SandboxError::not_found("mail service (imap, pop3, smtp)", service))?;
        queue.inject(
            match fault {
                MailFault::FailNext => crate::faults::SessionFault::FailNext,
                MailFault::DropAfterCommands(n) => {
                    crate::faults::SessionFault::DropAfterCommands(n)
                }
                MailFault::ExpireToken => crate::faults::SessionFault::ExpireToken,
            },
            count,
        );
        Ok(())
    }

    /// Makes the POP3 service answer RETR of message `uid` with `-ERR` (Exchange does so for items it cannot
    /// convert), for tests of readers.
    pub fn refuse_retrieve(&self, uid: &str) {
        if let Some(exchange) = &self.exchange {
            lock(&exchange.store).refuse_retrieve(uid);
        }
    }

    /// The messages the SMTP service accepted for recipients outside the tenant: (from, recipients, bytes).
    pub fn outbox(&self) -> Vec<(String, Vec<String>, Vec<u8>)> {
        self.exchange
            .as_ref()
            .map(|e| {
                lock(&e.store)
                    .outbox()
                    .iter()
                    .map(|m| (m.from.clone(), m.recipients.clone(), m.bytes.to_vec()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The messages of a folder of a mailbox (`INBOX`, `Sent Items`, …) as stored, oldest first.
    pub fn folder_messages(&self, mailbox: &str, folder: &str) -> Vec<Vec<u8>> {
        self.exchange
            .as_ref()
            .map(|e| {
                lock(&e.store)
                    .each_in(mailbox, folder)
                    .map(|m| m.bytes.to_vec())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The uids of a mailbox's messages, oldest first.
    pub fn mailbox_uids(&self, mailbox: &str) -> Vec<String> {
        self.exchange
            .as_ref()
            .map(|e| {
                lock(&e.store)
                    .each(mailbox)
                    .map(|m| m.uid.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks a bearer token the way the sandbox's IMAP, POP3, SMTP and Graph services do (signature,
    /// expiry at the sandbox's clock, issuer, audience, scope or role, and that the user or app still exists
    /// and is enabled): whom it speaks for, or why not.
    pub fn check_bearer(
        &self,
        token: &str,
        requirement: crate::Requirement,
    ) -> Result<crate::Principal, crate::BearerRefusal> {
        let directory = lock(&self.state.directory);
        self.state.check_bearer(&directory, token, requirement)
    }

    /// Approves a pending device code as `upn` (signed in without a password; the account's disabled,
    /// locked and expired-password states still refuse).
    pub fn approve_device_code(&self, user_code: &str, upn: &str) -> Result<(), SandboxError> {
        let directory = lock(&self.state.directory);
        decide(
            &self.state,
            &directory,
            user_code,
            DeviceDecision::Approve {
                upn,
                password: None,
            },
        )
        .map_err(|refusal| refusal.1)
    }

    /// Declines a pending device code: the next poll answers `authorization_declined`.
    pub fn decline_device_code(&self, user_code: &str) -> Result<(), SandboxError> {
        let directory = lock(&self.state.directory);
        decide(&self.state, &directory, user_code, DeviceDecision::Decline)
            .map_err(|refusal| refusal.1)
    }

    /// Device codes still waiting for a decision and not expired.
    pub fn pending_device_codes(&self) -> Vec<PendingDeviceCode> {
        let now = self.state.now_unix();
        lock(&self.state.grants)
            .device_codes
            .values()
            .filter(|grant| grant.state == DeviceState::Pending && grant.expires_at > now)
            .map(|grant| PendingDeviceCode {
                user_code: grant.user_code.clone(),
                client_id: grant.client_id.clone(),
                scope: grant.scope.clone(),
                expires_in: grant.expires_at - now,
            })
            .collect()
    }

    /// Changes a user's flags or password.
    pub fn update_user(&self, upn: &str, update: UserUpdate) -> Result<UserStatus, SandboxError> {
        let mut directory = lock(&self.state.directory);
        let user = directory
            .find_user_mut(upn)
            .ok_or_else(|| SandboxError::not_found("user", upn))?;
        let apply = |flag: &mut bool, value: Option<bool>| {
            if let Some(value) = value {
                *flag = value;
            }
        };
        apply(&mut user.mfa_required, update.mfa_required);
        apply(&mut user.disabled, update.disabled);
        apply(&mut user.locked, update.locked);
        apply(&mut user.password_expired, update.password_expired);
        apply(&mut user.federated, update.federated);
        apply(&mut user.global_admin, update.global_admin);
        let password_changed = update.password.is_some();
        if let Some(password) = update.password {
            user.password = password;
        }
        let status = UserStatus::from(&*user);
        if password_changed {
            lock(&self.state.grants).revoke_user(&status.object_id);
        }
        if update.locked == Some(false) {
            clear_failed_sign_ins(&self.state, &status.object_id);
        }
        Ok(status)
    }

    /// `Set-CASMailbox`: changes `address`'s protocol switches (starting from the tenant's when the mailbox
    /// has none of its own) and returns them all, as `Get-CASMailbox` shows them.
    pub fn set_cas_mailbox(
        &self,
        address: &str,
        change: &CasMailbox,
    ) -> Result<CasMailbox, SandboxError> {
        let mut directory = lock(&self.state.directory);
        for tenant in &mut directory.tenants {
            let defaults = tenant.protocols.clone();
            let Some(mailbox) = tenant
                .mailboxes
                .iter_mut()
                .find(|m| m.address.eq_ignore_ascii_case(address))
            else {
                continue;
            };
            // A read (nothing to change) leaves a mailbox without switches of its own following the tenant's.
            let unchanged = *change == CasMailbox::default();
            if unchanged {
                let switches = mailbox.protocols.clone().unwrap_or(defaults);
                return Ok(CasMailbox {
                    imap_enabled: Some(switches.imap),
                    pop_enabled: Some(switches.pop),
                    smtp_client_authentication_disabled: Some(!switches.smtp_auth),
                });
            }
            let switches = mailbox.protocols.get_or_insert(defaults);
            if let Some(on) = change.imap_enabled {
                switches.imap = on;
            }
            if let Some(on) = change.pop_enabled {
                switches.pop = on;
            }
            if let Some(off) = change.smtp_client_authentication_disabled {
                switches.smtp_auth = !off;
            }
            return Ok(CasMailbox {
                imap_enabled: Some(switches.imap),
                pop_enabled: Some(switches.pop),
                smtp_client_authentication_disabled: Some(!switches.smtp_auth),
            });
        }
        Err(SandboxError::not_found("mailbox", address))
    }

    /// Sets or clears "MFA required".
    pub fn set_mfa_required(&self, upn: &str, required: bool) -> Result<UserStatus, SandboxError> {
        self.update_user(
            upn,
            UserUpdate {
                mfa_required: Some(required),
                ..UserUpdate::default()
            },
        )
    }

    /// Disables or enables a user.
    pub fn set_user_disabled(&self, upn: &str, disabled: bool) -> Result<UserStatus, SandboxError> {
        self.update_user(
            upn,
            UserUpdate {
                disabled: Some(disabled),
                ..UserUpdate::default()
            },
        )
    }

    /// Locks or unlocks a user.
    pub fn set_user_locked(&self, upn: &str, locked: bool) -> Result<UserStatus, SandboxError> {
        self.update_user(
            upn,
            UserUpdate {
                locked: Some(locked),
                ..UserUpdate::default()
            },
        )
    }

    /// Marks a user's password expired or not.
    pub fn set_password_expired(
        &self,
        upn: &str,
        expired: bool,
    ) -> Result<UserStatus, SandboxError> {
        self.update_user(
            upn,
            UserUpdate {
                password_expired: Some(expired),
                ..UserUpdate::default()
            },
        )
    }

    /// Sets a new password (revokes the user's refresh tokens, as a reset does in Entra).
    pub fn set_password(&self, upn: &str, password: &str) -> Result<UserStatus, SandboxError> {
        self.update_user(
            upn,
            UserUpdate {
                password: Some(password.to_string()),
                ..UserUpdate::default()
            },
        )
    }

    /// Revokes every refresh token of a user (`revokeSignInSessions`): the next refresh answers
    /// AADSTS50173. Returns how many were revoked.
    pub fn revoke_refresh_tokens(&self, upn: &str) -> Result<usize, SandboxError> {
        let directory = lock(&self.state.directory);
        let (_, user) = directory
            .find_user(upn)
            .ok_or_else(|| SandboxError::not_found("user", upn))?;
        Ok(lock(&self.state.grants).revoke_user(&user.object_id))
    }

    /// Expires one secret of an app (by secret id), or all of them when `secret_id` is `None`, as of
    /// now: using it then answers AADSTS7000222. Returns how many were expired.
    pub fn expire_secret(
        &self,
        client_id: &str,
        secret_id: Option<&str>,
    ) -> Result<usize, SandboxError> {
        let now = self.state.now_unix();
        self.with_app(client_id, |app| {
            let mut expired = 0;
            for secret in &mut app.secrets {
                if secret_id.is_none_or(|wanted| secret.secret_id.eq_ignore_ascii_case(wanted)) {
                    secret.expires_at_unix = Some(now);
                    expired += 1;
                }
            }
            if expired == 0 {
                return Err(SandboxError::not_found(
                    "secret",
                    secret_id.unwrap_or("(any)"),
                ));
            }
            Ok(expired)
        })
    }

    /// Grants delegated scopes on a resource: admin consent (`user: None`) or one user's consent.
    pub fn grant_delegated_consent(
        &self,
        client_id: &str,
        resource: &str,
        scopes: &[&str],
        user: Option<&str>,
    ) -> Result<(), SandboxError> {
        let resource_app_id = self.resource_app_id(client_id, resource)?;
        self.with_app(client_id, |app| {
            app.delegated_grants.push(DelegatedGrant {
                resource: resource_app_id,
                scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
                user: user.map(str::to_string),
            });
            Ok(())
        })
    }

    /// Removes delegated grants matching `resource` and `user` (`None` matches all). Returns how many
    /// grants were removed.
    pub fn revoke_delegated_consent(
        &self,
        client_id: &str,
        resource: Option<&str>,
        user: Option<&str>,
    ) -> Result<usize, SandboxError> {
        let resource_app_id = resource
            .map(|resource| self.resource_app_id(client_id, resource))
            .transpose()?;
        self.with_app(client_id, |app| {
            let before = app.delegated_grants.len();
            app.delegated_grants.retain(|grant| {
                let resource_matches = resource_app_id
                    .as_deref()
                    .is_none_or(|wanted| grant.resource.eq_ignore_ascii_case(wanted));
                let user_matches = user.is_none_or(|wanted| {
                    grant
                        .user
                        .as_deref()
                        .is_some_and(|upn| upn.eq_ignore_ascii_case(wanted))
                });
                !(resource_matches && user_matches)
            });
            Ok(before - app.delegated_grants.len())
        })
    }

    /// Grants app roles on a resource (admin consent for application permissions).
    pub fn grant_app_roles(
        &self,
        client_id: &str,
        resource: &str,
        roles: &[&str],
    ) -> Result<(), SandboxError> {
        let resource_app_id = self.resource_app_id(client_id, resource)?;
        self.with_app(client_id, |app| {
            app.app_role_grants.push(AppRoleGrant {
                resource: resource_app_id,
                roles: roles.iter().map(|role| role.to_string()).collect(),
            });
            Ok(())
        })
    }

    /// Removes app-role grants on `resource` (all resources when `None`). Returns how many were removed.
    pub fn revoke_app_roles(
        &self,
        client_id: &str,
        resource: Option<&str>,
    ) -> Result<usize, SandboxError> {
        let resource_app_id = resource
            .map(|resource| self.resource_app_id(client_id, resource))
            .transpose()?;
        self.with_app(client_id, |app| {
            let before = app.app_role_grants.len();
            app.app_role_grants.retain(|grant| {
                !resource_app_id
                    .as_deref()
                    .is_none_or(|wanted| grant.resource.eq_ignore_ascii_case(wanted))
            });
            Ok(before - app.app_role_grants.len())
        })
    }

    /// Enables or disables an app (disabled: AADSTS7000112).
    pub fn set_app_enabled(&self, client_id: &str, enabled: bool) -> Result<(), SandboxError> {
        self.with_app(client_id, |app| {
            app.enabled = enabled;
            Ok(())
        })
    }

    /// Answers the next `count` token requests with `fault` instead of handling them (they are still
    /// counted in the stats); [`TokenFault::SlowDown`] answers only device-code polls. Replaces
    /// faults injected earlier; `count` 0 clears them.
    pub fn inject_token_faults(&self, fault: TokenFault, count: u32) {
        self.state.token_faults.inject(fault, count);
    }

    /// Removes injected faults.
    pub fn clear_token_faults(&self) {
        self.state.token_faults.clear();
    }

    /// Answers the next `count` Microsoft Graph requests (any route under `/v1.0/`, before their token is
    /// looked at) with `fault`, replacing any pending Graph fault.
    pub fn inject_graph_fault(&self, fault: GraphFault, count: u32) {
        self.state.graph_faults.inject(fault, count);
    }

    /// Removes any pending Graph fault.
    pub fn clear_graph_faults(&self) {
        self.state.graph_faults.clear();
    }

    /// The request counters.
    pub fn stats(&self) -> RequestStats {
        lock(&self.state.stats).clone()
    }

    /// Zeroes the request counters.
    pub fn reset_stats(&self) {
        *lock(&self.state.stats) = RequestStats::default();
    }

    /// A copy of the current tenant model.
    pub fn tenant_model(&self) -> TenantModel {
        lock(&self.state.directory).clone()
    }

    /// Changes the tenant model directly, for anything the named operations do not cover.
    pub fn update_tenant_model<T>(&self, change: impl FnOnce(&mut TenantModel) -> T) -> T {
        change(&mut lock(&self.state.directory))
    }

    fn with_app<T>(
        &self,
        client_id: &str,
        change: impl FnOnce(&mut crate::tenant::AppRegistration) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        let mut directory = lock(&self.state.directory);
        let app = directory
            .find_app_mut(client_id)
            .ok_or_else(|| SandboxError::not_found("application", client_id))?;
        change(app)
    }

    /// Resolves an app id or identifier URI to the resource app id, in the app's tenant.
    fn resource_app_id(&self, client_id: &str, resource: &str) -> Result<String, SandboxError> {
        let directory = lock(&self.state.directory);
        let (tenant, _) = directory
            .find_app(client_id)
            .ok_or_else(|| SandboxError::not_found("application", client_id))?;
        tenant
            .resource(resource)
            .map(|resource| resource.app_id.clone())
            .ok_or_else(|| SandboxError::not_found("resource", resource))
    }
}

// ---- HTTP ----------------------------------------------------------------------------------------

impl IntoResponse for SandboxError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            SandboxError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            SandboxError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            SandboxError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        (
            status,
            Json(json!({ "error": kind, "message": self.to_string() })),
        )
            .into_response()
    }
}

/// Parses an optional JSON body: empty means the type's default.
fn body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, SandboxError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|error| SandboxError::InvalidRequest(error.to_string()))
}

type AdminState = State<Arc<IdentityState>>;
type AdminResult = Result<Response, SandboxError>;

fn handle(state: Arc<IdentityState>) -> AdminHandle {
    AdminHandle::new(state)
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    #[serde(default)]
    username: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpireSecretRequest {
    #[serde(default)]
    secret_id: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnabledRequest {
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct FaultRequest {
    #[serde(flatten)]
    fault: TokenFault,
    #[serde(default = "one")]
    count: u32,
}

async fn http_inject_faults(State(state): AdminState, bytes: Bytes) -> AdminResult {
    let request: FaultRequest = serde_json::from_slice(&bytes)
        .map_err(|error| SandboxError::InvalidRequest(error.to_string()))?;
    handle(state).inject_token_faults(request.fault, request.count);
    Ok(Json(json!({})).into_response())
}

#[derive(Deserialize)]
struct GraphFaultRequest {
    #[serde(flatten)]
    fault: GraphFault,
    #[serde(default = "one")]
    count: u32,
}

/// `POST /_sandbox/admin/faults/graph`.
async fn http_inject_graph_fault(State(state): AdminState, bytes: Bytes) -> AdminResult {
    let request: GraphFaultRequest = serde_json::from_slice(&bytes)
        .map_err(|error| SandboxError::InvalidRequest(error.to_string()))?;
    let fault = match &request.fault {
        GraphFault::Throttled { .. } => "throttled",
        GraphFault::Unavailable { .. } => "unavailable",
        GraphFault::SyncStateNotFound => "sync_state_not_found",
    };
    handle(state).inject_graph_fault(request.fault, request.count);
    Ok(Json(json!({ "fault": fault, "count": request.count })).into_response())
}

/// `POST /_sandbox/admin/faults/graph/clear`.
async fn http_clear_graph_faults(State(state): AdminState) -> Json<serde_json::Value> {
    handle(state).clear_graph_faults();
    Json(json!({}))
}

async fn http_clear_faults(State(state): AdminState) -> Json<serde_json::Value> {
    handle(state).clear_token_faults();
    Json(json!({}))
}

async fn http_stats(State(state): AdminState) -> Json<RequestStats> {
    Json(handle(state).stats())
}

async fn http_reset_stats(State(state): AdminState) -> Json<serde_json::Value> {
    handle(state).reset_stats();
    Json(json!({}))
}

async fn http_device_codes(State(state): AdminState) -> Json<Vec<PendingDeviceCode>> {
    Json(handle(state).pending_device_codes())
}

async fn http_approve(
    State(state): AdminState,
    Path(user_code): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let request: ApproveRequest = body(&bytes)?;
    let username = request
        .username
        .ok_or_else(|| SandboxError::InvalidRequest("'username' is required".into()))?;
    handle(state).approve_device_code(&user_code, &username)?;
    Ok(Json(json!({ "user_code": user_code, "status": "approved" })).into_response())
}

async fn http_decline(State(state): AdminState, Path(user_code): Path<String>) -> AdminResult {
    handle(state).decline_device_code(&user_code)?;
    Ok(Json(json!({ "user_code": user_code, "status": "declined" })).into_response())
}

async fn http_update_user(
    State(state): AdminState,
    Path(upn): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let update: UserUpdate = body(&bytes)?;
    Ok(Json(handle(state).update_user(&upn, update)?).into_response())
}

/// `POST /_sandbox/admin/mailboxes/{address}/cas-mailbox` with `{"ImapEnabled": false, …}`: Set-CASMailbox.
async fn http_set_cas_mailbox(
    State(state): AdminState,
    Path(address): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let change: CasMailbox = body(&bytes)?;
    Ok(Json(handle(state).set_cas_mailbox(&address, &change)?).into_response())
}

/// `GET …/cas-mailbox`: Get-CASMailbox (the switches that apply).
async fn http_get_cas_mailbox(
    State(state): AdminState,
    Path(address): Path<String>,
) -> AdminResult {
    Ok(Json(handle(state).set_cas_mailbox(&address, &CasMailbox::default())?).into_response())
}

/// A connection fault for a mail service, as the admin route takes it.
#[derive(Debug, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case", deny_unknown_fields)]
enum ConnectionFaultRequest {
    /// `{"fault": "drop-after-bytes", "bytes": 40, "count": 1}`
    DropAfterBytes {
        bytes: u64,
        #[serde(default = "one")]
        count: u32,
    },
    /// `{"fault": "delay", "millis": 300, "count": 1}`: each write of the connection waits that long.
    Delay {
        millis: u64,
        #[serde(default = "one")]
        count: u32,
    },
    /// `{"fault": "refuse", "seconds": 5}`: new connections are closed at once for that long (throttling).
    Refuse { seconds: u64 },
    /// `{"fault": "drop-after-commands", "commands": 3, "count": 1}`: a new connection answers that many
    /// commands, then drops, the next one unanswered.
    DropAfterCommands {
        commands: u32,
        #[serde(default = "one")]
        count: u32,
    },
    /// `{"fault": "fail-next", "count": 1}`: the next command is answered `NO Server Unavailable. 15` (IMAP),
    /// `-ERR Server Unavailable. 21` (POP3) or `451 4.3.2 …` (SMTP) without running.
    FailNext {
        #[serde(default = "one")]
        count: u32,
    },
    /// `{"fault": "expire-token", "count": 1}`: the next command of a signed-in session finds its token
    /// expired: `* BYE Session invalidated - AccessTokenExpired` (IMAP), `-ERR …` (POP3), `421 4.7.0 …` (SMTP).
    ExpireToken {
        #[serde(default = "one")]
        count: u32,
    },
}

fn one() -> u32 {
    1
}

fn connection_faults<'a>(
    exchange: &'a crate::exchange::ExchangeState,
    service: &str,
) -> Result<&'a Arc<m365mail_server::Faults>, SandboxError> {
    exchange
        .connection_faults
        .get(service)
        .ok_or_else(|| SandboxError::not_found("mail service (imap, pop3, smtp)", service))
}

/// `POST /_sandbox/admin/faults/mail/{service}`: the next connections to IMAP, POP3 or SMTP get a fault.
async fn http_inject_connection_fault(
    axum::Extension(exchange): ExchangeExtension,
    Path(service): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    use crate::faults::SessionFault;
    use m365mail_server::ConnectionFault;
    let request: ConnectionFaultRequest = serde_json::from_slice(&bytes)
        .map_err(|error| SandboxError::InvalidRequest(error.to_string()))?;
    let connection_faults = connection_faults(&exchange, &service)?;
    let session_faults = exchange.session_faults(&service);
    let count = match request {
        ConnectionFaultRequest::DropAfterBytes { bytes, count } => {
            connection_faults.inject(ConnectionFault::DropAfterBytes(bytes), count);
            count
        }
        ConnectionFaultRequest::Delay { millis, count } => {
            let delay = std::time::Duration::from_millis(millis);
            connection_faults.inject(ConnectionFault::Delay(delay), count);
            count
        }
        ConnectionFaultRequest::Refuse { seconds } => {
            let window = std::time::Duration::from_secs(seconds);
            connection_faults.inject(ConnectionFault::Refuse(window), 1);
            1
        }
        ConnectionFaultRequest::DropAfterCommands { commands, count } => {
            session_faults.inject(SessionFault::DropAfterCommands(commands), count);
            count
        }
        ConnectionFaultRequest::FailNext { count } => {
            session_faults.inject(SessionFault::FailNext, count);
            count
        }
        ConnectionFaultRequest::ExpireToken { count } => {
            session_faults.inject(SessionFault::ExpireToken, count);
            count
        }
    };
    Ok(Json(json!({ "service": service, "count": count })).into_response())
}

/// `POST /_sandbox/admin/faults/mail/{service}/clear`.
async fn http_clear_connection_faults(
    axum::Extension(exchange): ExchangeExtension,
    Path(service): Path<String>,
) -> AdminResult {
    connection_faults(&exchange, &service)?.clear();
    exchange.session_faults(&service).clear();
    Ok(Json(json!({})).into_response())
}

async fn http_revoke_refresh_tokens(
    State(state): AdminState,
    Path(upn): Path<String>,
) -> AdminResult {
    let revoked = handle(state).revoke_refresh_tokens(&upn)?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

async fn http_expire_secret(
    State(state): AdminState,
    Path(client_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let request: ExpireSecretRequest = body(&bytes)?;
    let expired = handle(state).expire_secret(&client_id, request.secret_id.as_deref())?;
    Ok(Json(json!({ "expired": expired })).into_response())
}

async fn http_grant_consent(
    State(state): AdminState,
    Path(client_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let change: ConsentChange = body(&bytes)?;
    let resource = change
        .resource
        .ok_or_else(|| SandboxError::InvalidRequest("'resource' is required".into()))?;
    let scopes: Vec<&str> = change.scopes.iter().map(String::as_str).collect();
    handle(state).grant_delegated_consent(
        &client_id,
        &resource,
        &scopes,
        change.user.as_deref(),
    )?;
    Ok(Json(json!({})).into_response())
}

async fn http_revoke_consent(
    State(state): AdminState,
    Path(client_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let change: ConsentChange = body(&bytes)?;
    let removed = handle(state).revoke_delegated_consent(
        &client_id,
        change.resource.as_deref(),
        change.user.as_deref(),
    )?;
    Ok(Json(json!({ "removed": removed })).into_response())
}

async fn http_grant_roles(
    State(state): AdminState,
    Path(client_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let change: AppRolesChange = body(&bytes)?;
    let resource = change
        .resource
        .ok_or_else(|| SandboxError::InvalidRequest("'resource' is required".into()))?;
    let roles: Vec<&str> = change.roles.iter().map(String::as_str).collect();
    handle(state).grant_app_roles(&client_id, &resource, &roles)?;
    Ok(Json(json!({})).into_response())
}

async fn http_revoke_roles(
    State(state): AdminState,
    Path(client_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let change: AppRolesChange = body(&bytes)?;
    let removed = handle(state).revoke_app_roles(&client_id, change.resource.as_deref())?;
    Ok(Json(json!({ "removed": removed })).into_response())
}

async fn http_set_enabled(
    State(state): AdminState,
    Path(client_id): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let request: EnabledRequest = body(&bytes)?;
    let enabled = request
        .enabled
        .ok_or_else(|| SandboxError::InvalidRequest("'enabled' is required".into()))?;
    handle(state).set_app_enabled(&client_id, enabled)?;
    Ok(Json(json!({})).into_response())
}

type ExchangeExtension = axum::Extension<Arc<crate::exchange::ExchangeState>>;

/// A folder of a mailbox, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStatus {
    /// The IMAP name.
    pub name: String,
    /// Its special use (`Sent`, `Drafts`, `Trash`, `Archive`, `Junk`), if any.
    pub special_use: Option<String>,
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// The UID the next message gets.
    pub uid_next: u32,
    /// Messages in it.
    pub messages: usize,
}

/// `?folder=` on the mailbox routes (default the Inbox).
#[derive(Debug, Default, Deserialize)]
struct FolderQuery {
    folder: Option<String>,
}

/// `POST /_sandbox/admin/mailboxes/{address}/folders/{folder}/uidvalidity`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UidValidityRequest {
    uid_validity: u32,
}

async fn http_folders(
    State(state): AdminState,
    axum::Extension(exchange): ExchangeExtension,
    Path(address): Path<String>,
) -> AdminResult {
    require_mailbox(&state, &address)?;
    Ok(Json(
        handle(state)
            .with_exchange(exchange)
            .mailbox_folders(&address),
    )
    .into_response())
}

async fn http_set_uid_validity(
    State(state): AdminState,
    axum::Extension(exchange): ExchangeExtension,
    Path((address, folder)): Path<(String, String)>,
    bytes: Bytes,
) -> AdminResult {
    require_mailbox(&state, &address)?;
    let request: UidValidityRequest = body(&bytes)?;
    handle(state).with_exchange(exchange).set_uid_validity(
        &address,
        &folder,
        request.uid_validity,
    )?;
    Ok(
        Json(json!({ "folder": folder, "uid_validity": request.uid_validity.max(1) }))
            .into_response(),
    )
}

/// A 404 unless `address` is a mailbox of the tenant.
fn require_mailbox(state: &IdentityState, address: &str) -> Result<(), SandboxError> {
    let known = lock(&state.directory).tenants.iter().any(|t| {
        t.mailboxes
            .iter()
            .any(|m| m.address.eq_ignore_ascii_case(address))
    });
    if known {
        Ok(())
    } else {
        Err(SandboxError::not_found("mailbox", address))
    }
}

/// One message of a mailbox, as the list route shows it.
#[derive(Debug, Clone, Serialize)]
struct MailboxMessage {
    /// The POP3 UIDL.
    uid: String,
    /// The IMAP UID in its folder.
    imap_uid: u32,
    flags: Vec<String>,
    size: usize,
    subject: Option<String>,
}

/// `POST /_sandbox/admin/mailboxes/{address}/messages`: the body is the raw RFC 5322 message (up to
/// [`MAX_DELIVER_BYTES`]).
async fn http_deliver(
    State(state): AdminState,
    axum::Extension(exchange): ExchangeExtension,
    Path(address): Path<String>,
    axum::extract::Query(query): axum::extract::Query<FolderQuery>,
    bytes: Bytes,
) -> AdminResult {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(SandboxError::InvalidRequest(
            "the body must be an RFC 5322 message (headers, a blank line, the body)".into(),
        ));
    }
    let folder = query.folder.unwrap_or_else(|| "INBOX".into());
    let uid = handle(state)
        .with_exchange(exchange)
        .deliver_to_folder(&address, &folder, &bytes)?;
    Ok(Json(serde_json::json!({ "uid": uid, "size": bytes.len() })).into_response())
}

/// `GET /_sandbox/admin/mailboxes/{address}/messages`.
async fn http_list_mailbox(
    State(state): AdminState,
    axum::Extension(exchange): ExchangeExtension,
    Path(address): Path<String>,
    axum::extract::Query(query): axum::extract::Query<FolderQuery>,
) -> AdminResult {
    require_mailbox(&state, &address)?;
    let folder = query.folder.unwrap_or_else(|| "INBOX".into());
    // Sizes and subjects read in place: no message is copied to answer.
    let messages: Vec<MailboxMessage> = lock(&exchange.store)
        .each_in(&address, &folder)
        .map(|m| MailboxMessage {
            size: m.bytes.len(),
            subject: subject_of(&m.bytes),
            uid: m.uid.clone(),
            imap_uid: m.imap_uid,
            flags: m.flags.clone(),
        })
        .collect();
    Ok(Json(messages).into_response())
}

/// The first `Subject:` line of the header, unfolded, undecoded.
fn subject_of(message: &[u8]) -> Option<String> {
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let header = String::from_utf8_lossy(&message[..header_end]);
    let mut lines = header.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case("subject:") {
            let mut value = line[8..].trim().to_string();
            while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
                value.push(' ');
                value.push_str(next.trim());
            }
            return Some(value);
        }
    }
    None
}

/// The largest message the deliver route takes (the other admin routes keep the 1 MiB body limit).
pub(crate) const MAX_DELIVER_BYTES: usize = 64 * 1024 * 1024;

/// Whether a request is a delivery (its body may be up to [`MAX_DELIVER_BYTES`]).
pub(crate) fn is_delivery(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && path.starts_with("/_sandbox/admin/mailboxes/")
        && path.ends_with("/messages")
}

/// The admin routes (see the module documentation).
pub(crate) fn router() -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/_sandbox/admin/stats", get(http_stats))
        .route("/_sandbox/admin/stats/reset", post(http_reset_stats))
        .route("/_sandbox/admin/faults/token", post(http_inject_faults))
        .route("/_sandbox/admin/faults/clear", post(http_clear_faults))
        .route(
            "/_sandbox/admin/faults/graph",
            post(http_inject_graph_fault),
        )
        .route(
            "/_sandbox/admin/faults/graph/clear",
            post(http_clear_graph_faults),
        )
        .route(
            "/_sandbox/admin/faults/mail/{service}",
            post(http_inject_connection_fault),
        )
        .route(
            "/_sandbox/admin/faults/mail/{service}/clear",
            post(http_clear_connection_faults),
        )
        .route("/_sandbox/admin/device-codes", get(http_device_codes))
        .route(
            "/_sandbox/admin/device-codes/{user_code}/approve",
            post(http_approve),
        )
        .route(
            "/_sandbox/admin/device-codes/{user_code}/decline",
            post(http_decline),
        )
        .route("/_sandbox/admin/users/{upn}", post(http_update_user))
        .route(
            "/_sandbox/admin/users/{upn}/revoke-refresh-tokens",
            post(http_revoke_refresh_tokens),
        )
        .route(
            "/_sandbox/admin/apps/{client_id}/secrets/expire",
            post(http_expire_secret),
        )
        .route(
            "/_sandbox/admin/apps/{client_id}/consent",
            post(http_grant_consent),
        )
        .route(
            "/_sandbox/admin/apps/{client_id}/consent/revoke",
            post(http_revoke_consent),
        )
        .route(
            "/_sandbox/admin/apps/{client_id}/app-roles",
            post(http_grant_roles),
        )
        .route(
            "/_sandbox/admin/apps/{client_id}/app-roles/revoke",
            post(http_revoke_roles),
        )
        .route(
            "/_sandbox/admin/apps/{client_id}/enabled",
            post(http_set_enabled),
        )
        .route(
            "/_sandbox/admin/mailboxes/{address}/messages",
            // The body is already read and bounded (request_body); axum's own 2 MB default would cut it.
            get(http_list_mailbox)
                .post(http_deliver)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_DELIVER_BYTES)),
        )
        .route(
            "/_sandbox/admin/mailboxes/{address}/folders",
            get(http_folders),
        )
        .route(
            "/_sandbox/admin/mailboxes/{address}/cas-mailbox",
            get(http_get_cas_mailbox).post(http_set_cas_mailbox),
        )
        .route(
            "/_sandbox/admin/mailboxes/{address}/folders/{folder}/uidvalidity",
            post(http_set_uid_validity),
        )
        .route(
            "/_sandbox/admin/exchange/service-principals",
            get(exchange::http_service_principals).post(exchange::http_new_service_principal),
        )
        .route(
            "/_sandbox/admin/exchange/service-principals/{identity}",
            get(exchange::http_service_principal),
        )
        .route(
            "/_sandbox/admin/exchange/service-principals/{identity}/remove",
            post(exchange::http_remove_service_principal),
        )
        .route(
            "/_sandbox/admin/exchange/service-principals/{identity}/authorization",
            get(exchange::http_test_authorization),
        )
        .route(
            "/_sandbox/admin/exchange/transport-config",
            get(exchange::http_get_transport_config).post(exchange::http_set_transport_config),
        )
        .route(
            "/_sandbox/admin/mailboxes/{address}/permissions",
            get(exchange::http_mailbox_permissions).post(exchange::http_add_mailbox_permission),
        )
        .route(
            "/_sandbox/admin/mailboxes/{address}/permissions/remove",
            post(exchange::http_remove_mailbox_permission),
        )
        .route(
            "/_sandbox/admin/mailboxes/{address}/recipient-permissions",
            get(exchange::http_recipient_permissions).post(exchange::http_add_recipient_permission),
        )
        .route(
            "/_sandbox/admin/mailboxes/{address}/recipient-permissions/remove",
            post(exchange::http_remove_recipient_permission),
        )
        .route("/_sandbox/admin", any(http_unknown_route))
        .route("/_sandbox/admin/{*rest}", any(http_unknown_route))
}

/// Any other admin path or method: a JSON 404 that lists where the routes are documented.
async fn http_unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "not_found",
            "message": format!(
                "no admin route {method} {}; the routes are listed in the sandbox section of the README \
                 and in the m365mail_sandbox::admin documentation",
                uri.path()
            ),
        })),
    )
        .into_response()
}
