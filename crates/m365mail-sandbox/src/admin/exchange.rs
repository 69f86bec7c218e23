//! The Exchange Online admin surface: what the Exchange PowerShell cmdlets of microsoft.md §10 do, as
//! [`AdminHandle`] methods and admin routes, on the tenant model the IMAP, POP3 and SMTP services enforce
//! (`exchange::access`).
//!
//! | Cmdlet | Method | Route (JSON keys are the cmdlet's parameter names) |
//! |---|---|---|
//! | `New-ServicePrincipal -AppId -ObjectId [-DisplayName]` | [`AdminHandle::new_service_principal`] | `POST /_sandbox/admin/exchange/service-principals` `{"AppId", "ObjectId", "DisplayName"?}` → 201 [`ExchangeServicePrincipalInfo`] (409 if the AppId is registered) |
//! | `Get-ServicePrincipal [-Identity]` | [`AdminHandle::exchange_service_principals`], [`AdminHandle::exchange_service_principal`] | `GET …/exchange/service-principals`, `GET …/exchange/service-principals/{identity}` |
//! | `Remove-ServicePrincipal -Identity` | [`AdminHandle::remove_service_principal`] | `POST …/exchange/service-principals/{identity}/remove` |
//! | `Test-ServicePrincipalAuthorization -Identity [-Resource]` (the sandbox's report) | [`AdminHandle::test_service_principal_authorization`] | `GET …/exchange/service-principals/{identity}/authorization[?resource=mailbox]` → [`ServicePrincipalAuthorization`] |
//! | `Add-MailboxPermission -Identity -User -AccessRights FullAccess` | [`AdminHandle::add_mailbox_permission`] | `POST /_sandbox/admin/mailboxes/{address}/permissions` `{"User", "AccessRights": ["FullAccess"]}` |
//! | `Remove-MailboxPermission …` | [`AdminHandle::remove_mailbox_permission`] | `POST …/mailboxes/{address}/permissions/remove` (same body) |
//! | `Get-MailboxPermission -Identity` | [`AdminHandle::mailbox_permissions`] | `GET …/mailboxes/{address}/permissions` → `[`[`MailboxPermission`]`]` |
//! | `Add-RecipientPermission -Identity -Trustee -AccessRights SendAs` | [`AdminHandle::add_recipient_permission`] | `POST …/mailboxes/{address}/recipient-permissions` `{"Trustee", "AccessRights": ["SendAs"]}` |
//! | `Remove-RecipientPermission …` | [`AdminHandle::remove_recipient_permission`] | `POST …/mailboxes/{address}/recipient-permissions/remove` |
//! | `Get-RecipientPermission -Identity` | [`AdminHandle::recipient_permissions`] | `GET …/mailboxes/{address}/recipient-permissions` → `[`[`RecipientPermission`]`]` |
//! | `Set-CASMailbox` / `Get-CASMailbox` | [`AdminHandle::set_cas_mailbox`] | `…/mailboxes/{address}/cas-mailbox` (see the admin module) |
//! | `Set-TransportConfig -SmtpClientAuthenticationDisabled` / `Get-TransportConfig` | [`AdminHandle::set_transport_config`], [`AdminHandle::transport_config`] | `POST`/`GET /_sandbox/admin/exchange/transport-config` `{"SmtpClientAuthenticationDisabled": bool}` |
//!
//! A service principal's identity (`{identity}`, `User`, `Trustee`) is its AppId, ObjectId or display
//! name; a `User`/`Trustee` that names no service principal is taken as a user's UPN. Like the cmdlets,
//! `New-ServicePrincipal` does not check the ids against Entra: a wrong ObjectId is accepted and app-only
//! access then fails, which [`ServicePrincipalAuthorization::object_id_matches_entra`] reports. Only
//! `FullAccess` and `SendAs` are modelled; RBAC for Applications (management scopes and role assignments,
//! §10.2) is not, so `RoleAssignments` is always empty. A mailbox with switches of its own (any
//! `Set-CASMailbox` change) keeps its SMTP AUTH value when the tenant's changes: the sandbox does not
//! model the per-mailbox `$null` ("follow the organisation").

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{AdminHandle, AdminResult, AdminState, body, handle};
use crate::{
    SandboxError,
    sync::lock,
    tenant::{ExchangeServicePrincipal, Tenant, TenantModel},
};

/// A service principal registered in Exchange Online, as `Get-ServicePrincipal` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeServicePrincipalInfo {
    /// The principal's identity (the sandbox uses its ObjectId).
    #[serde(rename = "Identity")]
    pub identity: String,
    /// `AppId`: the app's client id.
    #[serde(rename = "AppId")]
    pub app_id: String,
    /// `ObjectId`: the enterprise application's object id it was registered with.
    #[serde(rename = "ObjectId")]
    pub object_id: String,
    /// `DisplayName`.
    #[serde(rename = "DisplayName")]
    pub display_name: String,
}

impl From<&ExchangeServicePrincipal> for ExchangeServicePrincipalInfo {
    fn from(sp: &ExchangeServicePrincipal) -> Self {
        Self {
            identity: sp.service_principal_object_id.clone(),
            app_id: sp.app_id.clone(),
            object_id: sp.service_principal_object_id.clone(),
            display_name: sp.display_name.clone(),
        }
    }
}

/// One line of `Get-MailboxPermission`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxPermission {
    /// The mailbox.
    #[serde(rename = "Identity")]
    pub identity: String,
    /// Who holds it: a service principal's ObjectId, or a user's UPN.
    #[serde(rename = "User")]
    pub user: String,
    /// `ServicePrincipal` or `User` (the sandbox's addition).
    #[serde(rename = "UserType")]
    pub user_type: String,
    /// Always `["FullAccess"]` (the one right modelled).
    #[serde(rename = "AccessRights")]
    pub access_rights: Vec<String>,
    /// Always false.
    #[serde(rename = "IsInherited")]
    pub is_inherited: bool,
    /// Always false.
    #[serde(rename = "Deny")]
    pub deny: bool,
}

/// One line of `Get-RecipientPermission`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientPermission {
    /// The mailbox.
    #[serde(rename = "Identity")]
    pub identity: String,
    /// Who may send as it: a service principal's ObjectId, or a user's UPN.
    #[serde(rename = "Trustee")]
    pub trustee: String,
    /// Always `Allow`.
    #[serde(rename = "AccessControlType")]
    pub access_control_type: String,
    /// Always `["SendAs"]`.
    #[serde(rename = "AccessRights")]
    pub access_rights: Vec<String>,
    /// Always false.
    #[serde(rename = "IsInherited")]
    pub is_inherited: bool,
}

/// `Set-TransportConfig` / `Get-TransportConfig`: the tenant-wide SMTP AUTH switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// `-SmtpClientAuthenticationDisabled`: true switches SMTP AUTH off for every mailbox that has no
    /// switch of its own (`535 5.7.139`).
    #[serde(
        rename = "SmtpClientAuthenticationDisabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub smtp_client_authentication_disabled: Option<bool>,
}

/// The sandbox's `Test-ServicePrincipalAuthorization`: everything app-only mail needs of one app, on
/// the Exchange and the Entra side (the real cmdlet reports RBAC role assignments only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePrincipalAuthorization {
    /// The identity asked about.
    #[serde(rename = "Identity")]
    pub identity: String,
    /// The app's client id.
    #[serde(rename = "AppId")]
    pub app_id: String,
    /// Registered in Exchange (`New-ServicePrincipal`).
    #[serde(rename = "RegisteredInExchange")]
    pub registered_in_exchange: bool,
    /// The ObjectId Exchange has, if registered.
    #[serde(rename = "ObjectId")]
    pub object_id: Option<String>,
    /// The app's service principal object id in Entra, if the app and its principal exist.
    #[serde(rename = "EntraServicePrincipalId")]
    pub entra_service_principal_id: Option<String>,
    /// Whether Exchange's ObjectId is Entra's (`None` when either is missing). False: app-only access is
    /// refused until the principal is registered again with the right id.
    #[serde(rename = "ObjectIdMatchesEntra")]
    pub object_id_matches_entra: Option<bool>,
    /// The Exchange Online application permissions granted in Entra (`IMAP.AccessAsApp`, …).
    #[serde(rename = "ExchangeAppRoles")]
    pub exchange_app_roles: Vec<String>,
    /// The mailbox asked about (`-Resource`), if any.
    #[serde(rename = "Resource")]
    pub resource: Option<String>,
    /// FullAccess on the resource (`None` without one).
    #[serde(rename = "FullAccess")]
    pub full_access: Option<bool>,
    /// SendAs on the resource (`None` without one).
    #[serde(rename = "SendAs")]
    pub send_as: Option<bool>,
    /// RBAC for Applications role assignments: never modelled, always empty.
    #[serde(rename = "RoleAssignments")]
    pub role_assignments: Vec<String>,
}

/// The body of the mailbox permission routes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PermissionRequest {
    #[serde(rename = "User", alias = "Trustee", default)]
    user: Option<String>,
    #[serde(rename = "AccessRights", default)]
    access_rights: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewServicePrincipalRequest {
    #[serde(rename = "AppId", default)]
    app_id: Option<String>,
    #[serde(rename = "ObjectId", default)]
    object_id: Option<String>,
    #[serde(rename = "DisplayName", default)]
    display_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ResourceQuery {
    resource: Option<String>,
}

fn guid(field: &str, value: &str) -> Result<String, SandboxError> {
    uuid::Uuid::parse_str(value)
        .map(|id| id.to_string())
        .map_err(|_| SandboxError::InvalidRequest(format!("'{field}' must be a GUID: {value}")))
}

fn sp_matches(sp: &ExchangeServicePrincipal, identity: &str) -> bool {
    sp.app_id.eq_ignore_ascii_case(identity)
        || sp
            .service_principal_object_id
            .eq_ignore_ascii_case(identity)
        || (!sp.display_name.is_empty() && sp.display_name.eq_ignore_ascii_case(identity))
}

/// The tenant holding `mailbox`, and the mailbox's index.
fn mailbox_mut<'m>(
    directory: &'m mut TenantModel,
    mailbox: &str,
) -> Result<(&'m mut Tenant, usize), SandboxError> {
    directory
        .tenants
        .iter_mut()
        .find_map(|tenant| {
            let index = tenant
                .mailboxes
                .iter()
                .position(|m| m.address.eq_ignore_ascii_case(mailbox))?;
            Some((tenant, index))
        })
        .ok_or_else(|| SandboxError::not_found("mailbox", mailbox))
}

/// Who a `User`/`Trustee` names in a tenant: a registered service principal (its ObjectId) or a user.
enum Holder {
    ServicePrincipal(usize),
    User(String),
}

fn holder(tenant: &Tenant, identity: &str) -> Result<Holder, SandboxError> {
    if let Some(index) = tenant
        .exchange_service_principals
        .iter()
        .position(|sp| sp_matches(sp, identity))
    {
        return Ok(Holder::ServicePrincipal(index));
    }
    tenant
        .user(identity)
        .map(|user| Holder::User(user.upn.clone()))
        .ok_or_else(|| {
            SandboxError::not_found(
                "service principal registered in Exchange, or user",
                identity,
            )
        })
}

fn rights(access_rights: &[String], wanted: &str) -> Result<(), SandboxError> {
    if access_rights.len() == 1 && access_rights[0].eq_ignore_ascii_case(wanted) {
        Ok(())
    } else {
        Err(SandboxError::InvalidRequest(format!(
            "'AccessRights' must be [\"{wanted}\"]: the only right the sandbox models here"
        )))
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list
        .iter()
        .any(|existing| existing.eq_ignore_ascii_case(item))
    {
        list.push(item.to_owned());
    }
}

fn remove_item(list: &mut Vec<String>, item: &str) -> usize {
    let before = list.len();
    list.retain(|existing| !existing.eq_ignore_ascii_case(item));
    before - list.len()
}

impl AdminHandle {
    /// `New-ServicePrincipal -AppId -ObjectId [-DisplayName]`: registers an app's service principal in
    /// Exchange Online (in the app's tenant; in the only tenant when the app is unknown). Both ids must be
    /// GUIDs; a second registration of the same AppId is a conflict. The ObjectId is not checked against
    /// Entra (see the module documentation).
    pub fn new_service_principal(
        &self,
        app_id: &str,
        object_id: &str,
        display_name: Option<&str>,
    ) -> Result<ExchangeServicePrincipalInfo, SandboxError> {
        let app_id = guid("AppId", app_id)?;
        let object_id = guid("ObjectId", object_id)?;
        let display_name = display_name.unwrap_or_default();
        if display_name.chars().count() > 256 {
            return Err(SandboxError::InvalidRequest(
                "'DisplayName' is longer than 256 characters".into(),
            ));
        }
        let mut directory = lock(&self.state.directory);
        let tenant_index = directory
            .tenants
            .iter()
            .position(|tenant| tenant.app(&app_id).is_some_and(|app| !app.first_party))
            .or_else(|| (directory.tenants.len() == 1).then_some(0))
            .ok_or_else(|| SandboxError::not_found("application", &app_id))?;
        let tenant = &mut directory.tenants[tenant_index];
        if tenant
            .exchange_service_principals
            .iter()
            .any(|sp| sp.app_id.eq_ignore_ascii_case(&app_id))
        {
            return Err(SandboxError::Conflict(format!(
                "a service principal with AppId {app_id} is already registered in Exchange"
            )));
        }
        if tenant.exchange_service_principals.len() >= 1000 {
            return Err(SandboxError::InvalidRequest(
                "the tenant has 1000 Exchange service principals, the sandbox's limit".into(),
            ));
        }
        let sp = ExchangeServicePrincipal {
            app_id,
            service_principal_object_id: object_id,
            display_name: display_name.to_owned(),
            full_access_mailboxes: Vec::new(),
            send_as_mailboxes: Vec::new(),
        };
        let info = ExchangeServicePrincipalInfo::from(&sp);
        tenant.exchange_service_principals.push(sp);
        Ok(info)
    }

    /// `Remove-ServicePrincipal -Identity` (its mailbox permissions go with it).
    pub fn remove_service_principal(&self, identity: &str) -> Result<(), SandboxError> {
        let mut directory = lock(&self.state.directory);
        for tenant in &mut directory.tenants {
            let before = tenant.exchange_service_principals.len();
            tenant
                .exchange_service_principals
                .retain(|sp| !sp_matches(sp, identity));
            if tenant.exchange_service_principals.len() != before {
                return Ok(());
            }
        }
        Err(SandboxError::not_found(
            "service principal registered in Exchange",
            identity,
        ))
    }

    /// `Get-ServicePrincipal`: every service principal registered in Exchange.
    pub fn exchange_service_principals(&self) -> Vec<ExchangeServicePrincipalInfo> {
        lock(&self.state.directory)
            .tenants
            .iter()
            .flat_map(|tenant| tenant.exchange_service_principals.iter())
            .map(ExchangeServicePrincipalInfo::from)
            .collect()
    }

    /// `Get-ServicePrincipal -Identity` (AppId, ObjectId or display name).
    pub fn exchange_service_principal(
        &self,
        identity: &str,
    ) -> Result<ExchangeServicePrincipalInfo, SandboxError> {
        lock(&self.state.directory)
            .tenants
            .iter()
            .flat_map(|tenant| tenant.exchange_service_principals.iter())
            .find(|sp| sp_matches(sp, identity))
            .map(ExchangeServicePrincipalInfo::from)
            .ok_or_else(|| {
                SandboxError::not_found("service principal registered in Exchange", identity)
            })
    }

    /// The sandbox's `Test-ServicePrincipalAuthorization -Identity [-Resource]` (see
    /// [`ServicePrincipalAuthorization`]). `identity` is an AppId, an ObjectId (Exchange's or Entra's) or a
    /// registered display name; an identity neither Exchange nor Entra knows is not found.
    pub fn test_service_principal_authorization(
        &self,
        identity: &str,
        resource: Option<&str>,
    ) -> Result<ServicePrincipalAuthorization, SandboxError> {
        let directory = lock(&self.state.directory);
        for tenant in &directory.tenants {
            let registered = tenant
                .exchange_service_principals
                .iter()
                .find(|sp| sp_matches(sp, identity));
            let app = tenant.apps.iter().find(|app| {
                registered.is_some_and(|sp| sp.app_id.eq_ignore_ascii_case(&app.client_id))
                    || app.client_id.eq_ignore_ascii_case(identity)
                    || app
                        .service_principal_id()
                        .is_some_and(|id| id.eq_ignore_ascii_case(identity))
            });
            if registered.is_none() && app.is_none() {
                continue;
            }
            let app_id = registered
                .map(|sp| sp.app_id.clone())
                .or_else(|| app.map(|app| app.client_id.clone()))
                .unwrap_or_default();
            let entra_id = app.and_then(|app| app.service_principal_id().map(str::to_owned));
            let object_id = registered.map(|sp| sp.service_principal_object_id.clone());
            let matches = match (&object_id, &entra_id) {
                (Some(exchange), Some(entra)) => Some(exchange.eq_ignore_ascii_case(entra)),
                _ => None,
            };
            let resource = match resource {
                Some(mailbox) => Some(
                    tenant
                        .mailboxes
                        .iter()
                        .find(|m| m.address.eq_ignore_ascii_case(mailbox))
                        .map(|m| m.address.clone())
                        .ok_or_else(|| SandboxError::not_found("mailbox", mailbox))?,
                ),
                None => None,
            };
            let has = |list: fn(&ExchangeServicePrincipal) -> &Vec<String>| {
                resource.as_ref().map(|mailbox| {
                    registered
                        .is_some_and(|sp| list(sp).iter().any(|m| m.eq_ignore_ascii_case(mailbox)))
                })
            };
            return Ok(ServicePrincipalAuthorization {
                identity: identity.to_owned(),
                app_id,
                registered_in_exchange: registered.is_some(),
                object_id,
                entra_service_principal_id: entra_id,
                object_id_matches_entra: matches,
                exchange_app_roles: app
                    .map(|app| app.granted_roles(crate::tenant::EXCHANGE_ONLINE_APP_ID))
                    .unwrap_or_default(),
                full_access: has(|sp| &sp.full_access_mailboxes),
                send_as: has(|sp| &sp.send_as_mailboxes),
                resource,
                role_assignments: Vec::new(),
            });
        }
        Err(SandboxError::not_found(
            "service principal or application",
            identity,
        ))
    }

    /// `Add-MailboxPermission -Identity mailbox -User user -AccessRights FullAccess`: `user` is a registered
    /// service principal (AppId, ObjectId or name) or a user's UPN. Returns the mailbox's permissions.
    pub fn add_mailbox_permission(
        &self,
        mailbox: &str,
        user: &str,
    ) -> Result<Vec<MailboxPermission>, SandboxError> {
        {
            let mut directory = lock(&self.state.directory);
            let (tenant, index) = mailbox_mut(&mut directory, mailbox)?;
            let address = tenant.mailboxes[index].address.clone();
            match holder(tenant, user)? {
                Holder::ServicePrincipal(sp) => push_unique(
                    &mut tenant.exchange_service_principals[sp].full_access_mailboxes,
                    &address,
                ),
                Holder::User(upn) => {
                    push_unique(&mut tenant.mailboxes[index].full_access_users, &upn)
                }
            }
        }
        self.mailbox_permissions(mailbox)
    }

    /// `Remove-MailboxPermission … -AccessRights FullAccess`. Returns how many grants were removed (0 or 1).
    pub fn remove_mailbox_permission(
        &self,
        mailbox: &str,
        user: &str,
    ) -> Result<usize, SandboxError> {
        let mut directory = lock(&self.state.directory);
        let (tenant, index) = mailbox_mut(&mut directory, mailbox)?;
        let address = tenant.mailboxes[index].address.clone();
        Ok(match holder(tenant, user)? {
            Holder::ServicePrincipal(sp) => remove_item(
                &mut tenant.exchange_service_principals[sp].full_access_mailboxes,
                &address,
            ),
            Holder::User(upn) => remove_item(&mut tenant.mailboxes[index].full_access_users, &upn),
        })
    }

    /// `Get-MailboxPermission -Identity mailbox`: FullAccess of users and service principals (the owner's
    /// own rights are not listed).
    pub fn mailbox_permissions(
        &self,
        mailbox: &str,
    ) -> Result<Vec<MailboxPermission>, SandboxError> {
        let mut directory = lock(&self.state.directory);
        let (tenant, index) = mailbox_mut(&mut directory, mailbox)?;
        let address = tenant.mailboxes[index].address.clone();
        let line = |user: &str, user_type: &str| MailboxPermission {
            identity: address.clone(),
            user: user.to_owned(),
            user_type: user_type.to_owned(),
            access_rights: vec!["FullAccess".into()],
            is_inherited: false,
            deny: false,
        };
        let mut lines: Vec<MailboxPermission> = tenant.mailboxes[index]
            .full_access_users
            .iter()
            .map(|upn| line(upn, "User"))
            .collect();
        lines.extend(
            tenant
                .exchange_service_principals
                .iter()
                .filter(|sp| {
                    sp.full_access_mailboxes
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(&address))
                })
                .map(|sp| line(&sp.service_principal_object_id, "ServicePrincipal")),
        );
        Ok(lines)
    }

    /// `Add-RecipientPermission -Identity mailbox -Trustee trustee -AccessRights SendAs`. Returns the
    /// mailbox's recipient permissions.
    pub fn add_recipient_permission(
        &self,
        mailbox: &str,
        trustee: &str,
    ) -> Result<Vec<RecipientPermission>, SandboxError> {
        {
            let mut directory = lock(&self.state.directory);
            let (tenant, index) = mailbox_mut(&mut directory, mailbox)?;
            let address = tenant.mailboxes[index].address.clone();
            match holder(tenant, trustee)? {
                Holder::ServicePrincipal(sp) => push_unique(
                    &mut tenant.exchange_service_principals[sp].send_as_mailboxes,
                    &address,
                ),
                Holder::User(upn) => push_unique(&mut tenant.mailboxes[index].send_as_users, &upn),
            }
        }
        self.recipient_permissions(mailbox)
    }

    /// `Remove-RecipientPermission … -AccessRights SendAs`. Returns how many were removed (0 or 1).
    pub fn remove_recipient_permission(
        &self,
        mailbox: &str,
        trustee: &str,
    ) -> Result<usize, SandboxError> {
        let mut directory = lock(&self.state.directory);
        let (tenant, index) = mailbox_mut(&mut directory, mailbox)?;
        let address = tenant.mailboxes[index].address.clone();
        Ok(match holder(tenant, trustee)? {
            Holder::ServicePrincipal(sp) => remove_item(
                &mut tenant.exchange_service_principals[sp].send_as_mailboxes,
                &address,
            ),
            Holder::User(upn) => remove_item(&mut tenant.mailboxes[index].send_as_users, &upn),
        })
    }

    /// `Get-RecipientPermission -Identity mailbox`: who may send as it.
    pub fn recipient_permissions(
        &self,
        mailbox: &str,
    ) -> Result<Vec<RecipientPermission>, SandboxError> {
        let mut directory = lock(&self.state.directory);
        let (tenant, index) = mailbox_mut(&mut directory, mailbox)?;
        let address = tenant.mailboxes[index].address.clone();
        let line = |trustee: &str| RecipientPermission {
            identity: address.clone(),
            trustee: trustee.to_owned(),
            access_control_type: "Allow".into(),
            access_rights: vec!["SendAs".into()],
            is_inherited: false,
        };
        let mut lines: Vec<RecipientPermission> = tenant.mailboxes[index]
            .send_as_users
            .iter()
            .map(|upn| line(upn))
            .collect();
        lines.extend(
            tenant
                .exchange_service_principals
                .iter()
                .filter(|sp| {
                    sp.send_as_mailboxes
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(&address))
                })
                .map(|sp| line(&sp.service_principal_object_id)),
        );
        Ok(lines)
    }

    /// `Set-TransportConfig -SmtpClientAuthenticationDisabled` for every tenant (the sandbox serves one in
    /// practice); returns the setting as `Get-TransportConfig` shows it.
    pub fn set_transport_config(
        &self,
        change: &TransportConfig,
    ) -> Result<TransportConfig, SandboxError> {
        let mut directory = lock(&self.state.directory);
        if let Some(disabled) = change.smtp_client_authentication_disabled {
            for tenant in &mut directory.tenants {
                tenant.protocols.smtp_auth = !disabled;
            }
        }
        Ok(TransportConfig {
            smtp_client_authentication_disabled: Some(
                directory
                    .tenants
                    .first()
                    .is_some_and(|tenant| !tenant.protocols.smtp_auth),
            ),
        })
    }

    /// `Get-TransportConfig`.
    pub fn transport_config(&self) -> TransportConfig {
        self.set_transport_config(&TransportConfig::default())
            .unwrap_or_default()
    }
}

// ---- HTTP ----------------------------------------------------------------------------------------

fn permission_user(request: &PermissionRequest, field: &str) -> Result<String, SandboxError> {
    request
        .user
        .clone()
        .ok_or_else(|| SandboxError::InvalidRequest(format!("'{field}' is required")))
}

pub(super) async fn http_new_service_principal(
    State(state): AdminState,
    bytes: Bytes,
) -> AdminResult {
    let request: NewServicePrincipalRequest = body(&bytes)?;
    let app_id = request
        .app_id
        .ok_or_else(|| SandboxError::InvalidRequest("'AppId' is required".into()))?;
    let object_id = request
        .object_id
        .ok_or_else(|| SandboxError::InvalidRequest("'ObjectId' is required".into()))?;
    let info = handle(state).new_service_principal(
        &app_id,
        &object_id,
        request.display_name.as_deref(),
    )?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub(super) async fn http_service_principals(State(state): AdminState) -> Response {
    Json(handle(state).exchange_service_principals()).into_response()
}

pub(super) async fn http_service_principal(
    State(state): AdminState,
    Path(identity): Path<String>,
) -> AdminResult {
    Ok(Json(handle(state).exchange_service_principal(&identity)?).into_response())
}

pub(super) async fn http_remove_service_principal(
    State(state): AdminState,
    Path(identity): Path<String>,
) -> AdminResult {
    handle(state).remove_service_principal(&identity)?;
    Ok(Json(serde_json::json!({ "removed": 1 })).into_response())
}

pub(super) async fn http_test_authorization(
    State(state): AdminState,
    Path(identity): Path<String>,
    Query(query): Query<ResourceQuery>,
) -> AdminResult {
    Ok(Json(
        handle(state).test_service_principal_authorization(&identity, query.resource.as_deref())?,
    )
    .into_response())
}

pub(super) async fn http_mailbox_permissions(
    State(state): AdminState,
    Path(address): Path<String>,
) -> AdminResult {
    Ok(Json(handle(state).mailbox_permissions(&address)?).into_response())
}

pub(super) async fn http_add_mailbox_permission(
    State(state): AdminState,
    Path(address): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let request: PermissionRequest = body(&bytes)?;
    rights(&request.access_rights, "FullAccess")?;
    let user = permission_user(&request, "User")?;
    Ok(Json(handle(state).add_mailbox_permission(&address, &user)?).into_response())
}

pub(super) async fn http_remove_mailbox_permission(
    State(state): AdminState,
    Path(address): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let request: PermissionRequest = body(&bytes)?;
    rights(&request.access_rights, "FullAccess")?;
    let user = permission_user(&request, "User")?;
    let removed = handle(state).remove_mailbox_permission(&address, &user)?;
    Ok(Json(serde_json::json!({ "removed": removed })).into_response())
}

pub(super) async fn http_recipient_permissions(
    State(state): AdminState,
    Path(address): Path<String>,
) -> AdminResult {
    Ok(Json(handle(state).recipient_permissions(&address)?).into_response())
}

pub(super) async fn http_add_recipient_permission(
    State(state): AdminState,
    Path(address): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let request: PermissionRequest = body(&bytes)?;
    rights(&request.access_rights, "SendAs")?;
    let trustee = permission_user(&request, "Trustee")?;
    Ok(Json(handle(state).add_recipient_permission(&address, &trustee)?).into_response())
}

pub(super) async fn http_remove_recipient_permission(
    State(state): AdminState,
    Path(address): Path<String>,
    bytes: Bytes,
) -> AdminResult {
    let request: PermissionRequest = body(&bytes)?;
    rights(&request.access_rights, "SendAs")?;
    let trustee = permission_user(&request, "Trustee")?;
    let removed = handle(state).remove_recipient_permission(&address, &trustee)?;
    Ok(Json(serde_json::json!({ "removed": removed })).into_response())
}

pub(super) async fn http_get_transport_config(State(state): AdminState) -> Response {
    Json(handle(state).transport_config()).into_response()
}

pub(super) async fn http_set_transport_config(
    State(state): AdminState,
    bytes: Bytes,
) -> AdminResult {
    let change: TransportConfig = body(&bytes)?;
    Ok(Json(handle(state).set_transport_config(&change)?).into_response())
}
