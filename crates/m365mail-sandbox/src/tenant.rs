//! The tenant model: directories, users, app registrations, consent, and (as data for later) mailboxes.
//!
//! A model is plain data. It can be built in code, loaded from a TOML file ([`TenantModel::from_file`]),
//! or taken from the built-in demo ([`TenantModel::demo`]). The sandbox holds it behind a lock and the admin
//! API changes it at run time.
//!
//! # File format
//!
//! The TOML file mirrors the structs below field for field (snake_case keys). A minimal file:
//!
//! ```toml
//! [[tenants]]
//! id = "6f1a3b2c-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
//! display_name = "Fabrikam"
//! domains = ["fabrikam.onmicrosoft.com"]
//!
//! [[tenants.users]]
//! upn = "ann@fabrikam.onmicrosoft.com"
//! object_id = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
//! display_name = "Ann"
//! password = "correct horse"
//!
//! [[tenants.apps]]
//! client_id = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
//! display_name = "Mail client"
//! allow_public_client_flows = true
//! redirect_uris = ["http://localhost"]
//! [[tenants.apps.delegated_grants]]
//! resource = "00000002-0000-0ff1-ce00-000000000000"
//! scopes = ["IMAP.AccessAsUser.All"]
//! ```
//!
//! `resources` (the APIs that can be named in a scope) default to Exchange Online and Microsoft Graph with
//! their mail permissions, so files rarely list them. Certificates are given as PEM; their thumbprints are
//! computed. Times (`expires_at_unix`) are Unix seconds.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{SandboxError, demo};

/// Application id of the Exchange Online resource (IMAP, POP, SMTP and EWS scopes).
pub const EXCHANGE_ONLINE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// Application id of the Microsoft Graph resource.
pub const MICROSOFT_GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// Application id of the Microsoft Graph Command Line Tools, the first-party public client an administrator
/// can sign in with before any app of their own exists (microsoft.md §9.2: unconfirmed against a real
/// tenant, which may also block it). The sandbox adds it to every tenant at start
/// ([`TenantModel::with_first_party_apps`]).
pub const GRAPH_COMMAND_LINE_TOOLS_APP_ID: &str = "14d82eec-204b-4c2f-b7e8-296a70dab67e";

/// The delegated Microsoft Graph scopes the Graph Command Line Tools are consented for in every tenant
/// (admin consent for all users, as after an administrator's first sign-in; Graph's directory routes
/// still refuse users without an admin role).
pub const GRAPH_COMMAND_LINE_TOOLS_SCOPES: [&str; 6] = [
    "User.Read",
    "Application.Read.All",
    "Application.ReadWrite.All",
    "AppRoleAssignment.ReadWrite.All",
    "DelegatedPermissionGrant.ReadWrite.All",
    "User.ReadBasic.All",
];

/// A GUID derived from `parts` (SHA-256, shaped as a version-4 UUID): stable ids for objects the model
/// does not name (resource service principals, app object ids, permission ids outside microsoft.md).
pub fn derived_guid(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part.to_ascii_lowercase().as_bytes());
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The Microsoft Graph Command Line Tools as the sandbox models them: a public client (public client flows
/// on, loopback redirect) consented for [`GRAPH_COMMAND_LINE_TOOLS_SCOPES`] on Microsoft Graph.
pub fn graph_command_line_tools_app(tenant_id: &str) -> AppRegistration {
    AppRegistration {
        client_id: GRAPH_COMMAND_LINE_TOOLS_APP_ID.into(),
        display_name: "Microsoft Graph Command Line Tools".into(),
        service_principal_object_id: derived_guid(&[
            "service-principal",
            tenant_id,
            GRAPH_COMMAND_LINE_TOOLS_APP_ID,
        ]),
        allow_public_client_flows: true,
        redirect_uris: vec!["http://localhost".into()],
        secrets: Vec::new(),
        certificates: Vec::new(),
        required_permissions: Vec::new(),
        delegated_grants: vec![DelegatedGrant {
            resource: MICROSOFT_GRAPH_APP_ID.into(),
            scopes: GRAPH_COMMAND_LINE_TOOLS_SCOPES
                .iter()
                .map(|scope| scope.to_string())
                .collect(),
            user: None,
        }],
        app_role_grants: Vec::new(),
        enabled: true,
        application_object_id: String::new(),
        sign_in_audience: "AzureADandPersonalMicrosoftAccount".into(),
        has_service_principal: true,
        first_party: true,
    }
}

/// Every tenant the sandbox serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantModel {
    /// The tenants (directories).
    #[serde(default)]
    pub tenants: Vec<Tenant>,
}

/// One Entra tenant (directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Tenant id (GUID, lower case), the `tid` claim.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Verified domains; each can replace the GUID in the `{tenant}` URL segment.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Users (members) of this directory.
    #[serde(default)]
    pub users: Vec<User>,
    /// App registrations homed in this directory (each with its service principal).
    #[serde(default)]
    pub apps: Vec<AppRegistration>,
    /// Resource APIs with a service principal in this tenant; a scope naming anything else gives
    /// AADSTS500011.
    #[serde(default = "default_resources")]
    pub resources: Vec<ResourceApi>,
    /// Exchange Online mailboxes (placeholder data for the later Exchange emulation).
    #[serde(default)]
    pub mailboxes: Vec<Mailbox>,
    /// Service principals registered in Exchange Online (`New-ServicePrincipal`) with their mailbox
    /// permissions (placeholder data for app-only IMAP/POP/SMTP).
    #[serde(default)]
    pub exchange_service_principals: Vec<ExchangeServicePrincipal>,
    /// Tenant-wide protocol switches (placeholder data).
    #[serde(default)]
    pub protocols: ProtocolSwitches,
    /// Basic authentication switched off for IMAP and POP (an authentication policy): IMAP then advertises
    /// `LOGINDISABLED` and no `AUTH=PLAIN` before sign-in (microsoft.md §7.4, observed).
    #[serde(default)]
    pub basic_auth_disabled: bool,
}

/// A user account.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User principal name, the sign-in name (`upn`, `preferred_username`).
    pub upn: String,
    /// Object id (GUID), the `oid` claim.
    pub object_id: String,
    /// Display name, the `name` claim.
    #[serde(default)]
    pub display_name: String,
    /// The password checked by ROPC and the sign-in pages.
    pub password: String,
    /// Sign-in needs MFA: ROPC fails with AADSTS50076; interactive flows (device code, auth code) pass.
    #[serde(default)]
    pub mfa_required: bool,
    /// Account disabled (AADSTS50057).
    #[serde(default)]
    pub disabled: bool,
    /// Account locked by smart lockout (AADSTS50053).
    #[serde(default)]
    pub locked: bool,
    /// Password expired (AADSTS50055).
    #[serde(default)]
    pub password_expired: bool,
    /// Federated account whose password lives in another IdP: ROPC fails with AADSTS50126 (no cloud
    /// password validation).
    #[serde(default)]
    pub federated: bool,
    /// Holds an admin role that may grant tenant-wide consent (the admin-consent endpoint).
    #[serde(default)]
    pub global_admin: bool,
}

// Passwords must never reach a log line.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("upn", &self.upn)
            .field("object_id", &self.object_id)
            .field("display_name", &self.display_name)
            .field("password", &"<redacted>")
            .field("mfa_required", &self.mfa_required)
            .field("disabled", &self.disabled)
            .field("locked", &self.locked)
            .field("password_expired", &self.password_expired)
            .field("federated", &self.federated)
            .field("global_admin", &self.global_admin)
            .finish()
    }
}

/// An app registration together with its service principal in the home tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRegistration {
    /// Application (client) id.
    pub client_id: String,
    /// Display name (`app_displayname` claim).
    #[serde(default)]
    pub display_name: String,
    /// Object id of the service principal (enterprise application) in the home tenant.
    #[serde(default)]
    pub service_principal_object_id: String,
    /// "Allow public client flows": ROPC, device code and native auth code without a credential.
    #[serde(default)]
    pub allow_public_client_flows: bool,
    /// Registered redirect URIs. `http://localhost` (or `127.0.0.1`) matches any port, as in Entra.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Client secrets.
    #[serde(default)]
    pub secrets: Vec<ClientSecret>,
    /// Certificates registered as credentials (`keyCredentials`).
    #[serde(default)]
    pub certificates: Vec<AppCertificate>,
    /// Requested API permissions (`requiredResourceAccess`); informational.
    #[serde(default)]
    pub required_permissions: Vec<RequiredPermission>,
    /// Delegated permission grants (admin consent for all users, or one user's consent).
    #[serde(default)]
    pub delegated_grants: Vec<DelegatedGrant>,
    /// Application permissions (app roles) granted by an admin.
    #[serde(default)]
    pub app_role_grants: Vec<AppRoleGrant>,
    /// A disabled application gets AADSTS7000112.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Object id of the app registration (Graph's `application.id`, not the client id); empty means one
    /// derived from the client id ([`AppRegistration::application_object_id`]).
    #[serde(default)]
    pub application_object_id: String,
    /// `signInAudience` (`AzureADMyOrg` when empty). Informational: the sandbox serves every app to its
    /// home tenant only, plus `organizations`/`common` as before.
    #[serde(default)]
    pub sign_in_audience: String,
    /// Whether the app has its service principal (enterprise application) in the home tenant. Apps in a
    /// tenant file have one (the default); an app created through Graph (`POST /v1.0/applications`) has
    /// none until `POST /v1.0/servicePrincipals`, and client credentials answer AADSTS7000229 meanwhile.
    #[serde(default = "enabled")]
    pub has_service_principal: bool,
    /// A Microsoft first-party app (the Microsoft Graph Command Line Tools): present in every tenant,
    /// not listed by `GET /v1.0/applications` (it is not homed in the tenant).
    #[serde(default)]
    pub first_party: bool,
}

/// A client secret (`passwordCredentials`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSecret {
    /// Secret id (`keyId`, a GUID). Sending it instead of the value gives AADSTS7000215.
    pub secret_id: String,
    /// The secret value.
    pub value: String,
    /// Expiry in Unix seconds; `None` never expires. An expired secret gives AADSTS7000222.
    #[serde(default)]
    pub expires_at_unix: Option<u64>,
    /// `displayName` of the password credential.
    #[serde(default)]
    pub display_name: String,
    /// `startDateTime` in Unix seconds, if known.
    #[serde(default)]
    pub start_at_unix: Option<u64>,
}

// Secret values must never reach a log line.
impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecret")
            .field("secret_id", &self.secret_id)
            .field("value", &"<redacted>")
            .field("expires_at_unix", &self.expires_at_unix)
            .field("display_name", &self.display_name)
            .field("start_at_unix", &self.start_at_unix)
            .finish()
    }
}

/// A certificate credential. Thumbprints are derived from the DER.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCertificate {
    /// The certificate in PEM.
    pub pem: String,
    /// Optional end of validity in Unix seconds; after it the credential is refused (AADSTS700027).
    #[serde(default)]
    pub expires_at_unix: Option<u64>,
    /// `keyId` of the key credential; empty means one derived from the certificate.
    #[serde(default)]
    pub key_id: String,
    /// `displayName` of the key credential.
    #[serde(default)]
    pub display_name: String,
    /// `startDateTime` in Unix seconds, if known.
    #[serde(default)]
    pub start_at_unix: Option<u64>,
}

impl AppCertificate {
    /// The key credential's `keyId`: its own, or one derived from the certificate.
    pub fn key_id(&self) -> String {
        if self.key_id.is_empty() {
            derived_guid(&["key-credential", &self.pem])
        } else {
            self.key_id.clone()
        }
    }

    /// The DER bytes of the certificate.
    pub fn der(&self) -> Result<Vec<u8>, SandboxError> {
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(self.pem.as_bytes())
            .map(|der| der.as_ref().to_vec())
            .map_err(|error| SandboxError::TenantModel(format!("certificate PEM: {error}")))
    }
}

/// Permissions an app asks for on one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredPermission {
    /// Resource application id.
    pub resource: String,
    /// Delegated scopes (short names).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// App roles (short names).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A delegated permission grant (`oauth2PermissionGrant`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegatedGrant {
    /// Resource application id (e.g. [`EXCHANGE_ONLINE_APP_ID`]).
    pub resource: String,
    /// Short scope names, e.g. `IMAP.AccessAsUser.All`.
    pub scopes: Vec<String>,
    /// `None`: admin consent for all users (`AllPrincipals`); `Some(upn)`: that user's own consent.
    #[serde(default)]
    pub user: Option<String>,
}

/// Application permissions (app roles) granted on one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoleGrant {
    /// Resource application id.
    pub resource: String,
    /// Role values, e.g. `IMAP.AccessAsApp`.
    pub roles: Vec<String>,
}

/// A resource API (the service principal of Exchange Online, Graph, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceApi {
    /// Resource application id.
    pub app_id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Identifier URIs a scope may start with; the one used becomes the token's `aud`.
    pub identifier_uris: Vec<String>,
    /// Delegated scopes it defines.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// App roles it defines.
    #[serde(default)]
    pub app_roles: Vec<String>,
    /// Answers a scope without a resource prefix (`User.Read`): Microsoft Graph in Entra.
    #[serde(default)]
    pub default_for_short_scopes: bool,
    /// Object id of the resource's service principal in this tenant; empty means one derived from the
    /// tenant and app ids ([`Tenant::resource_service_principal_id`]).
    #[serde(default)]
    pub service_principal_object_id: String,
}

/// An Exchange Online mailbox (placeholder for the later Exchange emulation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mailbox {
    /// Primary SMTP address.
    pub address: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Owning user's UPN; `None` for a shared mailbox.
    #[serde(default)]
    pub owner_upn: Option<String>,
    /// Shared mailbox (no sign-in of its own).
    #[serde(default)]
    pub shared: bool,
    /// Users with FullAccess (UPNs).
    #[serde(default)]
    pub full_access_users: Vec<String>,
    /// Users who may send as this mailbox (UPNs; `Add-RecipientPermission -AccessRights SendAs`).
    #[serde(default)]
    pub send_as_users: Vec<String>,
    /// Per-mailbox protocol switches (`Set-CASMailbox`); `None` inherits the tenant's.
    #[serde(default)]
    pub protocols: Option<ProtocolSwitches>,
}

/// A service principal registered in Exchange Online for app-only access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeServicePrincipal {
    /// Client id of the app.
    pub app_id: String,
    /// Enterprise application object id (what `New-ServicePrincipal -ObjectId` takes). App-only access
    /// works only while it is the app's service principal object id in Entra (a wrong one is the
    /// classic mistake of passing the app registration's object id).
    pub service_principal_object_id: String,
    /// `-DisplayName`.
    #[serde(default)]
    pub display_name: String,
    /// Mailboxes it may access with FullAccess.
    #[serde(default)]
    pub full_access_mailboxes: Vec<String>,
    /// Mailboxes it may send as.
    #[serde(default)]
    pub send_as_mailboxes: Vec<String>,
}

/// Protocol switches (tenant-wide or per mailbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolSwitches {
    /// IMAP enabled.
    #[serde(default = "enabled")]
    pub imap: bool,
    /// POP enabled.
    #[serde(default = "enabled")]
    pub pop: bool,
    /// Authenticated SMTP submission enabled.
    #[serde(default = "enabled")]
    pub smtp_auth: bool,
}

impl Default for ProtocolSwitches {
    fn default() -> Self {
        Self {
            imap: true,
            pop: true,
            smtp_auth: true,
        }
    }
}

fn enabled() -> bool {
    true
}

/// Exchange Online and Microsoft Graph with the mail-related permissions (and Graph's user-reading ones).
pub fn default_resources() -> Vec<ResourceApi> {
    let strings = |items: &[&str]| {
        items
            .iter()
            .map(|item| item.to_string())
            .collect::<Vec<_>>()
    };
    vec![
        ResourceApi {
            app_id: EXCHANGE_ONLINE_APP_ID.into(),
            display_name: "Office 365 Exchange Online".into(),
            identifier_uris: strings(&[
                "https://outlook.office.com",
                "https://outlook.office365.com",
                "https://ps.outlook.com",
            ]),
            scopes: strings(&[
                "IMAP.AccessAsUser.All",
                "POP.AccessAsUser.All",
                "SMTP.Send",
                "EWS.AccessAsUser.All",
                "Mail.Read",
                "Mail.Send",
                "User.Read",
            ]),
            app_roles: strings(&[
                "IMAP.AccessAsApp",
                "POP.AccessAsApp",
                "SMTP.SendAsApp",
                "full_access_as_app",
                "Exchange.ManageAsApp",
            ]),
            default_for_short_scopes: false,
            service_principal_object_id: String::new(),
        },
        ResourceApi {
            app_id: MICROSOFT_GRAPH_APP_ID.into(),
            display_name: "Microsoft Graph".into(),
            identifier_uris: strings(&["https://graph.microsoft.com"]),
            scopes: strings(&[
                "User.Read",
                "User.ReadBasic.All",
                "User.Read.All",
                "Directory.Read.All",
                "Mail.Read",
                "Mail.ReadWrite",
                "Mail.Send",
                "IMAP.AccessAsUser.All",
                "POP.AccessAsUser.All",
                "SMTP.Send",
                "Application.Read.All",
                "Application.ReadWrite.All",
                "AppRoleAssignment.ReadWrite.All",
                "DelegatedPermissionGrant.ReadWrite.All",
            ]),
            app_roles: strings(&[
                "Mail.Read",
                "Mail.ReadWrite",
                "Mail.Send",
                "User.Read.All",
                "Directory.Read.All",
                "Application.Read.All",
                "Application.ReadWrite.All",
                "AppRoleAssignment.ReadWrite.All",
                "DelegatedPermissionGrant.ReadWrite.All",
            ]),
            default_for_short_scopes: true,
            service_principal_object_id: String::new(),
        },
    ]
}

impl TenantModel {
    /// The built-in demo tenant; every identifier is a constant in [`crate::demo`].
    pub fn demo() -> Self {
        demo::tenant_model()
    }

    /// The empty tenant where setup begins: an administrator and one user with a mailbox (see
    /// [`crate::demo`]).
    pub fn empty() -> Self {
        demo::empty_tenant_model()
    }

    /// Parses a model from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, SandboxError> {
        let model: Self =
            toml::from_str(text).map_err(|error| SandboxError::TenantModel(error.to_string()))?;
        model.validate()?;
        Ok(model)
    }

    /// Loads a model from a TOML file (format in the module documentation).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SandboxError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SandboxError::File {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Serialises the model as TOML (the format [`TenantModel::from_file`] reads).
    pub fn to_toml_string(&self) -> Result<String, SandboxError> {
        toml::to_string(self).map_err(|error| SandboxError::TenantModel(error.to_string()))
    }

    /// Checks what serde cannot: unique ids, parsable certificates.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let mut tenant_names = std::collections::HashSet::new();
        let mut client_ids = std::collections::HashSet::new();
        for tenant in &self.tenants {
            for name in std::iter::once(&tenant.id).chain(&tenant.domains) {
                if !tenant_names.insert(name.to_ascii_lowercase()) {
                    return Err(SandboxError::TenantModel(format!(
                        "tenant id or domain {name} appears twice"
                    )));
                }
            }
            let mut upns = std::collections::HashSet::new();
            for user in &tenant.users {
                if !upns.insert(user.upn.to_ascii_lowercase()) {
                    return Err(SandboxError::TenantModel(format!(
                        "user {} appears twice",
                        user.upn
                    )));
                }
            }
            for app in &tenant.apps {
                // A first-party app is in every tenant; within one tenant it is still unique.
                let key = if app.first_party {
                    format!("{}/{}", tenant.id, app.client_id).to_ascii_lowercase()
                } else {
                    app.client_id.to_ascii_lowercase()
                };
                if !client_ids.insert(key) {
                    return Err(SandboxError::TenantModel(format!(
                        "client id {} appears twice",
                        app.client_id
                    )));
                }
                for certificate in &app.certificates {
                    certificate.der()?;
                }
                let resource_ids = app
                    .delegated_grants
                    .iter()
                    .map(|grant| &grant.resource)
                    .chain(app.app_role_grants.iter().map(|grant| &grant.resource));
                for resource in resource_ids {
                    if tenant.resource(resource).is_none() {
                        return Err(SandboxError::TenantModel(format!(
                            "app {} has a grant on resource {resource}, which tenant {} does not have",
                            app.client_id, tenant.id
                        )));
                    }
                }
                for grant in &app.delegated_grants {
                    if let Some(upn) = &grant.user
                        && tenant.user(upn).is_none()
                    {
                        return Err(SandboxError::TenantModel(format!(
                            "app {} has a consent of user {upn}, who is not in tenant {}",
                            app.client_id, tenant.id
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The model with the Microsoft first-party apps ([`graph_command_line_tools_app`]) added to every
    /// tenant that does not list them already. [`crate::Sandbox::start`] serves this.
    pub fn with_first_party_apps(mut self) -> Self {
        for tenant in &mut self.tenants {
            if tenant.app(GRAPH_COMMAND_LINE_TOOLS_APP_ID).is_none() {
                tenant.apps.push(graph_command_line_tools_app(&tenant.id));
            }
        }
        self
    }

    /// The tenant whose GUID or verified domain is `name` (case-insensitive).
    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|tenant| tenant.is_named(name))
    }

    /// The tenant and user for a UPN, searching every tenant.
    pub fn find_user(&self, upn: &str) -> Option<(&Tenant, &User)> {
        self.tenants
            .iter()
            .find_map(|tenant| tenant.user(upn).map(|user| (tenant, user)))
    }

    /// Mutable access to a user by UPN, searching every tenant.
    pub fn find_user_mut(&mut self, upn: &str) -> Option<&mut User> {
        self.tenants
            .iter_mut()
            .find_map(|tenant| tenant.user_mut(upn))
    }

    /// The tenant and app for a client id, searching every tenant.
    pub fn find_app(&self, client_id: &str) -> Option<(&Tenant, &AppRegistration)> {
        self.tenants
            .iter()
            .find_map(|tenant| tenant.app(client_id).map(|app| (tenant, app)))
    }

    /// Mutable access to an app by client id, searching every tenant.
    pub fn find_app_mut(&mut self, client_id: &str) -> Option<&mut AppRegistration> {
        self.tenants.iter_mut().find_map(|tenant| {
            tenant
                .apps
                .iter_mut()
                .find(|app| app.client_id.eq_ignore_ascii_case(client_id))
        })
    }
}

impl Tenant {
    /// Whether `name` is this tenant's GUID or one of its verified domains.
    pub fn is_named(&self, name: &str) -> bool {
        self.id.eq_ignore_ascii_case(name)
            || self
                .domains
                .iter()
                .any(|domain| domain.eq_ignore_ascii_case(name))
    }

    /// A user by UPN (case-insensitive).
    pub fn user(&self, upn: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|user| user.upn.eq_ignore_ascii_case(upn))
    }

    /// Mutable access to a user by UPN.
    pub fn user_mut(&mut self, upn: &str) -> Option<&mut User> {
        self.users
            .iter_mut()
            .find(|user| user.upn.eq_ignore_ascii_case(upn))
    }

    /// An app registration by client id (case-insensitive).
    pub fn app(&self, client_id: &str) -> Option<&AppRegistration> {
        self.apps
            .iter()
            .find(|app| app.client_id.eq_ignore_ascii_case(client_id))
    }

    /// The object id of a resource's service principal in this tenant (its own, or one derived from the
    /// tenant and app ids).
    pub fn resource_service_principal_id(&self, resource: &ResourceApi) -> String {
        if resource.service_principal_object_id.is_empty() {
            derived_guid(&["service-principal", &self.id, &resource.app_id])
        } else {
            resource.service_principal_object_id.clone()
        }
    }

    /// A resource API by application id or identifier URI.
    pub fn resource(&self, id_or_uri: &str) -> Option<&ResourceApi> {
        let wanted = id_or_uri.trim_end_matches('/');
        self.resources.iter().find(|resource| {
            resource.app_id.eq_ignore_ascii_case(wanted)
                || resource
                    .identifier_uris
                    .iter()
                    .any(|uri| uri.trim_end_matches('/').eq_ignore_ascii_case(wanted))
        })
    }
}

impl AppRegistration {
    /// Whether any credential (secret or certificate) is registered: a confidential client.
    pub fn has_credentials(&self) -> bool {
        !self.secrets.is_empty() || !self.certificates.is_empty()
    }

    /// The app registration's object id (Graph's `application.id`).
    pub fn application_object_id(&self) -> String {
        if self.application_object_id.is_empty() {
            derived_guid(&["application", &self.client_id])
        } else {
            self.application_object_id.clone()
        }
    }

    /// The object id of the app's service principal in its home tenant, if it has one (the client id
    /// stands in when the model names none, as the token claims have always done).
    pub fn service_principal_id(&self) -> Option<&str> {
        if !self.has_service_principal {
            None
        } else if self.service_principal_object_id.is_empty() {
            Some(&self.client_id)
        } else {
            Some(&self.service_principal_object_id)
        }
    }

    /// The delegated scopes of `resource_app_id` that `upn` may use: admin consent plus their own.
    ///
    /// Consent for the delegated IMAP, POP and SMTP permissions under Microsoft Graph (where the portal and
    /// most guides add them, microsoft.md §9.2's pitfall) also counts for Exchange Online, whose
    /// `https://outlook.office.com/…` scopes clients request: samples suggest this works in Entra; the
    /// sandbox's choice until settled against a real tenant.
    pub fn consented_scopes(&self, resource_app_id: &str, upn: &str) -> Vec<String> {
        const MAIL_PROTOCOL_SCOPES: [&str; 3] =
            ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"];
        let exchange = resource_app_id.eq_ignore_ascii_case(EXCHANGE_ONLINE_APP_ID);
        let mut scopes: Vec<String> = self
            .delegated_grants
            .iter()
            .filter(|grant| {
                grant.resource.eq_ignore_ascii_case(resource_app_id)
                    || (exchange && grant.resource.eq_ignore_ascii_case(MICROSOFT_GRAPH_APP_ID))
            })
            .filter(|grant| {
                grant
                    .user
                    .as_deref()
                    .is_none_or(|user| user.eq_ignore_ascii_case(upn))
            })
            .flat_map(|grant| {
                let graph_for_exchange =
                    exchange && !grant.resource.eq_ignore_ascii_case(resource_app_id);
                grant.scopes.iter().filter(move |scope| {
                    !graph_for_exchange
                        || MAIL_PROTOCOL_SCOPES
                            .iter()
                            .any(|protocol| protocol.eq_ignore_ascii_case(scope))
                })
            })
            .cloned()
            .collect();
        dedup_case_insensitive(&mut scopes);
        scopes
    }

    /// The app roles of `resource_app_id` granted to this app.
    pub fn granted_roles(&self, resource_app_id: &str) -> Vec<String> {
        let mut roles: Vec<String> = self
            .app_role_grants
            .iter()
            .filter(|grant| grant.resource.eq_ignore_ascii_case(resource_app_id))
            .flat_map(|grant| grant.roles.iter().cloned())
            .collect();
        dedup_case_insensitive(&mut roles);
        roles
    }

    /// Whether `redirect_uri` matches a registered one. Loopback URIs match on any port (Entra's rule for
    /// native apps); everything else must match exactly.
    pub fn accepts_redirect_uri(&self, redirect_uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| redirect_uri_matches(registered, redirect_uri))
    }
}

fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    // The URL parser drops tabs and newlines and trims spaces, so such a string could parse like a
    // registered loopback URI yet be unusable as a `Location`; a fragment is never allowed.
    if requested
        .chars()
        .any(|character| character.is_control() || character.is_whitespace())
        || requested.contains('#')
    {
        return false;
    }
    let (Ok(registered), Ok(requested)) = (url::Url::parse(registered), url::Url::parse(requested))
    else {
        return false;
    };
    let is_loopback = |url: &url::Url| {
        url.scheme() == "http"
            && matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
    };
    is_loopback(&registered)
        && is_loopback(&requested)
        && registered.host_str() == requested.host_str()
        && registered.path() == requested.path()
        && registered.query() == requested.query()
}

fn dedup_case_insensitive(items: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    items.retain(|item| seen.insert(item.to_ascii_lowercase()));
}
