//! The built-in demo tenant ("Contoso"): every identifier as a constant, so tests, the CLI demo and
//! documentation never repeat literals.
//!
//! Users (all in [`TENANT_ID`] / [`DOMAIN`]):
//! - [`USER_UPN`]: a normal user; [`SECOND_USER_UPN`]: another normal user.
//! - [`MFA_USER_UPN`]: MFA required (ROPC → AADSTS50076; device code and auth code work).
//! - [`DISABLED_USER_UPN`] (50057), [`LOCKED_USER_UPN`] (50053), [`EXPIRED_PASSWORD_USER_UPN`] (50055).
//! - [`ADMIN_UPN`]: a global administrator who can grant admin consent and, signed in through the
//!   Microsoft Graph Command Line Tools ([`crate::tenant::GRAPH_COMMAND_LINE_TOOLS_APP_ID`], added to every
//!   tenant at start), manage app registrations through Graph.
//!
//! [`TenantModel::empty`] is the tenant where setup begins: the same tenant id, domain, administrator and
//! [`USER_UPN`] with a mailbox, nothing else.
//!
//! Apps:
//! - [`PUBLIC_APP_ID`]: public client flows on, redirect `http://localhost`, admin consent for
//!   IMAP/POP/SMTP (Exchange), User.Read, User.ReadBasic.All, Mail.Send, Mail.Read and Mail.ReadWrite
//!   (Graph) and offline_access.
//! - [`CONFIDENTIAL_APP_ID`]: secret [`CONFIDENTIAL_APP_SECRET`] (id [`CONFIDENTIAL_APP_SECRET_ID`]) and
//!   the certificate from [`certificate`]; app roles IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp on
//!   Exchange Online and Mail.Read, Mail.ReadWrite, Mail.Send and User.Read.All on Graph; delegated IMAP/SMTP and Graph User.Read
//!   consent, so ROPC with a secret works too.
//! - [`NO_CONSENT_APP_ID`] (65001), [`NO_PUBLIC_FLOWS_APP_ID`] (7000218),
//!   [`EXPIRED_SECRET_APP_ID`] (7000222), [`DISABLED_APP_ID`] (7000112).

use std::sync::OnceLock;

use crate::{
    identity::crypto,
    tenant::{
        AppCertificate, AppRegistration, AppRoleGrant, ClientSecret, DelegatedGrant,
        EXCHANGE_ONLINE_APP_ID, ExchangeServicePrincipal, MICROSOFT_GRAPH_APP_ID, Mailbox,
        ProtocolSwitches, RequiredPermission, Tenant, TenantModel, User, default_resources,
    },
};

/// Tenant id (GUID) of the demo tenant.
pub const TENANT_ID: &str = "72f988bf-0000-4a00-8000-00000000c0de";
/// Verified domain of the demo tenant.
pub const DOMAIN: &str = "contoso.onmicrosoft.com";
/// Display name of the demo tenant.
pub const TENANT_DISPLAY_NAME: &str = "Contoso (m365mail sandbox)";

/// A normal user.
pub const USER_UPN: &str = "adele@contoso.onmicrosoft.com";
/// Password of [`USER_UPN`].
pub const USER_PASSWORD: &str = "Sandbox-Pass-1!";
/// Object id of [`USER_UPN`].
pub const USER_OBJECT_ID: &str = "a1d2e3f4-0000-4000-8000-000000000001";
/// Display name of [`USER_UPN`].
pub const USER_DISPLAY_NAME: &str = "Adele Vance";

/// A second normal user.
pub const SECOND_USER_UPN: &str = "alex@contoso.onmicrosoft.com";
/// Password of [`SECOND_USER_UPN`].
pub const SECOND_USER_PASSWORD: &str = "Sandbox-Pass-2!";
/// Object id of [`SECOND_USER_UPN`].
pub const SECOND_USER_OBJECT_ID: &str = "a1d2e3f4-0000-4000-8000-000000000002";

/// A user who must pass MFA (ROPC fails with AADSTS50076).
pub const MFA_USER_UPN: &str = "megan@contoso.onmicrosoft.com";
/// Password of [`MFA_USER_UPN`].
pub const MFA_USER_PASSWORD: &str = "Sandbox-Pass-3!";
/// Object id of [`MFA_USER_UPN`].
pub const MFA_USER_OBJECT_ID: &str = "a1d2e3f4-0000-4000-8000-000000000003";

/// A disabled user (AADSTS50057).
pub const DISABLED_USER_UPN: &str = "diego@contoso.onmicrosoft.com";
/// Password of [`DISABLED_USER_UPN`].
pub const DISABLED_USER_PASSWORD: &str = "Sandbox-Pass-4!";
/// Object id of [`DISABLED_USER_UPN`].
pub const DISABLED_USER_OBJECT_ID: &str = "a1d2e3f4-0000-4000-8000-000000000004";

/// A locked-out user (AADSTS50053).
pub const LOCKED_USER_UPN: &str = "lynne@contoso.onmicrosoft.com";
/// Password of [`LOCKED_USER_UPN`].
pub const LOCKED_USER_PASSWORD: &str = "Sandbox-Pass-5!";
/// Object id of [`LOCKED_USER_UPN`].
pub const LOCKED_USER_OBJECT_ID: &str = "a1d2e3f4-0000-4000-8000-000000000005";

/// A user whose password has expired (AADSTS50055).
pub const EXPIRED_PASSWORD_USER_UPN: &str = "patti@contoso.onmicrosoft.com";
/// Password of [`EXPIRED_PASSWORD_USER_UPN`].
pub const EXPIRED_PASSWORD_USER_PASSWORD: &str = "Sandbox-Pass-6!";
/// Object id of [`EXPIRED_PASSWORD_USER_UPN`].
pub const EXPIRED_PASSWORD_USER_OBJECT_ID: &str = "a1d2e3f4-0000-4000-8000-000000000006";

/// A tenant administrator (may grant admin consent on the admin-consent page).
pub const ADMIN_UPN: &str = "admin@contoso.onmicrosoft.com";
/// Password of [`ADMIN_UPN`].
pub const ADMIN_PASSWORD: &str = "Sandbox-Admin-7!";
/// Object id of [`ADMIN_UPN`].
pub const ADMIN_OBJECT_ID: &str = "a1d2e3f4-0000-4000-8000-000000000007";

/// A shared mailbox (placeholder data for the Exchange emulation).
pub const SHARED_MAILBOX: &str = "support@contoso.onmicrosoft.com";

/// Public client app with delegated mail consent.
pub const PUBLIC_APP_ID: &str = "c0ffee00-0000-4000-8000-00000000a001";
/// Display name of [`PUBLIC_APP_ID`].
pub const PUBLIC_APP_NAME: &str = "m365mail desktop (public client)";
/// Redirect URI registered on [`PUBLIC_APP_ID`] (any port).
pub const PUBLIC_APP_REDIRECT_URI: &str = "http://localhost";

/// Confidential app with a secret, a certificate and app-only mail roles.
pub const CONFIDENTIAL_APP_ID: &str = "c0ffee00-0000-4000-8000-00000000a002";
/// Display name of [`CONFIDENTIAL_APP_ID`].
pub const CONFIDENTIAL_APP_NAME: &str = "m365mail daemon (confidential client)";
/// Service principal object id of [`CONFIDENTIAL_APP_ID`] (for Exchange `New-ServicePrincipal`).
pub const CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID: &str = "5e7f1ce0-0000-4000-8000-00000000a002";
/// The client secret VALUE of [`CONFIDENTIAL_APP_ID`] (contains `~ . _ -` like real secrets).
pub const CONFIDENTIAL_APP_SECRET: &str = "Sbx8Q~demo.Secret_Value-0123456789abcdefghij";
/// The secret ID of [`CONFIDENTIAL_APP_SECRET`]; sending it instead of the value gives AADSTS7000215.
pub const CONFIDENTIAL_APP_SECRET_ID: &str = "5ec7e700-0000-4000-8000-00000000a002";

/// App with public client flows on but no consent at all (AADSTS65001).
pub const NO_CONSENT_APP_ID: &str = "c0ffee00-0000-4000-8000-00000000a003";
/// App with consent but "Allow public client flows" off and no credential (AADSTS7000218).
pub const NO_PUBLIC_FLOWS_APP_ID: &str = "c0ffee00-0000-4000-8000-00000000a004";
/// App whose only secret has expired (AADSTS7000222).
pub const EXPIRED_SECRET_APP_ID: &str = "c0ffee00-0000-4000-8000-00000000a005";
/// The expired secret's value.
pub const EXPIRED_SECRET_APP_SECRET: &str = "Sbx8Q~expired.Secret_Value-9876543210zyxwvu";
/// The expired secret's id.
pub const EXPIRED_SECRET_APP_SECRET_ID: &str = "5ec7e700-0000-4000-8000-00000000a005";
/// A disabled app (AADSTS7000112).
pub const DISABLED_APP_ID: &str = "c0ffee00-0000-4000-8000-00000000a006";

/// Delegated IMAP scope as clients request it.
pub const IMAP_SCOPE: &str = "https://outlook.office.com/IMAP.AccessAsUser.All";
/// Delegated POP scope.
pub const POP_SCOPE: &str = "https://outlook.office.com/POP.AccessAsUser.All";
/// Delegated SMTP submission scope.
pub const SMTP_SCOPE: &str = "https://outlook.office.com/SMTP.Send";
/// App-only Exchange Online scope (IMAP/POP/SMTP roles).
pub const EXCHANGE_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// App-only Microsoft Graph scope.
pub const GRAPH_APP_SCOPE: &str = "https://graph.microsoft.com/.default";

/// The demo app's certificate credential: what a client needs for `private_key_jwt`.
#[derive(Clone)]
pub struct DemoCertificate {
    /// The certificate (registered on [`CONFIDENTIAL_APP_ID`]) in PEM.
    pub certificate_pem: String,
    /// The matching RSA private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_key_pem: String,
    /// Upper-case hex SHA-1 thumbprint (MSAL's `thumbprint`).
    pub sha1_thumbprint_hex: String,
    /// Base64url SHA-1 thumbprint (`x5t` header).
    pub x5t: String,
    /// Base64url SHA-256 thumbprint (`x5t#S256` header).
    pub x5t_s256: String,
}

impl std::fmt::Debug for DemoCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoCertificate")
            .field("sha1_thumbprint_hex", &self.sha1_thumbprint_hex)
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The demo app's certificate and private key, generated once per process (RSA 2048, self-signed) and
/// registered on [`CONFIDENTIAL_APP_ID`] by [`TenantModel::demo`].
pub fn certificate() -> &'static DemoCertificate {
    static CERTIFICATE: OnceLock<DemoCertificate> = OnceLock::new();
    CERTIFICATE.get_or_init(|| {
        generate_certificate().expect("generating an RSA key and a self-signed certificate")
    })
}

fn generate_certificate() -> Result<DemoCertificate, rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "m365mail sandbox demo daemon");
    let certificate = params.self_signed(&key)?;
    // Thumbprints straight from the DER just made (no PEM round trip).
    let sha1 = crypto::sha1(certificate.der());
    Ok(DemoCertificate {
        sha1_thumbprint_hex: crypto::hex_upper(&sha1),
        x5t: crypto::b64url(&sha1),
        x5t_s256: crypto::b64url(&crypto::sha256(certificate.der())),
        certificate_pem: certificate.pem(),
        private_key_pem: key.serialize_pem(),
    })
}

fn user(upn: &str, object_id: &str, display_name: &str, password: &str) -> User {
    User {
        upn: upn.into(),
        object_id: object_id.into(),
        display_name: display_name.into(),
        password: password.into(),
        mfa_required: false,
        disabled: false,
        locked: false,
        password_expired: false,
        federated: false,
        global_admin: false,
    }
}

fn app(client_id: &str, display_name: &str, service_principal: &str) -> AppRegistration {
    AppRegistration {
        client_id: client_id.into(),
        display_name: display_name.into(),
        service_principal_object_id: service_principal.into(),
        allow_public_client_flows: false,
        redirect_uris: Vec::new(),
        secrets: Vec::new(),
        certificates: Vec::new(),
        required_permissions: Vec::new(),
        delegated_grants: Vec::new(),
        app_role_grants: Vec::new(),
        enabled: true,
        application_object_id: String::new(),
        sign_in_audience: String::new(),
        has_service_principal: true,
        first_party: false,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// Admin consent for the delegated mail scopes a desktop mail client needs.
fn mail_client_consent() -> (Vec<RequiredPermission>, Vec<DelegatedGrant>) {
    let exchange_scopes = strings(&["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"]);
    let graph_scopes = strings(&["User.Read", "offline_access"]);
    (
        vec![
            RequiredPermission {
                resource: EXCHANGE_ONLINE_APP_ID.into(),
                scopes: exchange_scopes.clone(),
                roles: Vec::new(),
            },
            RequiredPermission {
                resource: MICROSOFT_GRAPH_APP_ID.into(),
                scopes: graph_scopes.clone(),
                roles: Vec::new(),
            },
        ],
        vec![
            DelegatedGrant {
                resource: EXCHANGE_ONLINE_APP_ID.into(),
                scopes: exchange_scopes,
                user: None,
            },
            DelegatedGrant {
                resource: MICROSOFT_GRAPH_APP_ID.into(),
                scopes: graph_scopes,
                user: None,
            },
        ],
    )
}

fn app_only_mail_roles() -> (Vec<RequiredPermission>, Vec<AppRoleGrant>) {
    let exchange_roles = strings(&["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"]);
    let graph_roles = strings(&["Mail.Read", "Mail.ReadWrite", "Mail.Send", "User.Read.All"]);
    (
        vec![
            RequiredPermission {
                resource: EXCHANGE_ONLINE_APP_ID.into(),
                scopes: Vec::new(),
                roles: exchange_roles.clone(),
            },
            RequiredPermission {
                resource: MICROSOFT_GRAPH_APP_ID.into(),
                scopes: Vec::new(),
                roles: graph_roles.clone(),
            },
        ],
        vec![
            AppRoleGrant {
                resource: EXCHANGE_ONLINE_APP_ID.into(),
                roles: exchange_roles,
            },
            AppRoleGrant {
                resource: MICROSOFT_GRAPH_APP_ID.into(),
                roles: graph_roles,
            },
        ],
    )
}

/// The empty tenant (`m365mail sandbox serve --empty-tenant`): where setup begins. The demo tenant's id
/// and domain, with only the administrator [`ADMIN_UPN`] (password [`ADMIN_PASSWORD`], no mailbox) and
/// the user [`USER_UPN`] (password [`USER_PASSWORD`]) with a mailbox; no app registrations (the Graph
/// Command Line Tools are added at start like in every tenant), no Exchange service principal, every
/// protocol on.
pub(crate) fn empty_tenant_model() -> TenantModel {
    let mut admin_user = user(
        ADMIN_UPN,
        ADMIN_OBJECT_ID,
        "MOD Administrator",
        ADMIN_PASSWORD,
    );
    admin_user.global_admin = true;
    TenantModel {
        tenants: vec![Tenant {
            id: TENANT_ID.into(),
            display_name: TENANT_DISPLAY_NAME.into(),
            domains: strings(&[DOMAIN]),
            users: vec![
                admin_user,
                user(USER_UPN, USER_OBJECT_ID, USER_DISPLAY_NAME, USER_PASSWORD),
            ],
            apps: Vec::new(),
            resources: default_resources(),
            mailboxes: vec![Mailbox {
                address: USER_UPN.into(),
                display_name: USER_DISPLAY_NAME.into(),
                owner_upn: Some(USER_UPN.into()),
                shared: false,
                full_access_users: Vec::new(),
                send_as_users: Vec::new(),
                protocols: None,
            }],
            exchange_service_principals: Vec::new(),
            protocols: ProtocolSwitches::default(),
            basic_auth_disabled: false,
        }],
    }
}

pub(crate) fn tenant_model() -> TenantModel {
    let mut mfa_user = user(
        MFA_USER_UPN,
        MFA_USER_OBJECT_ID,
        "Megan Bowen",
        MFA_USER_PASSWORD,
    );
    mfa_user.mfa_required = true;
    let mut disabled_user = user(
        DISABLED_USER_UPN,
        DISABLED_USER_OBJECT_ID,
        "Diego Siciliani",
        DISABLED_USER_PASSWORD,
    );
    disabled_user.disabled = true;
    let mut locked_user = user(
        LOCKED_USER_UPN,
        LOCKED_USER_OBJECT_ID,
        "Lynne Robbins",
        LOCKED_USER_PASSWORD,
    );
    locked_user.locked = true;
    let mut expired_user = user(
        EXPIRED_PASSWORD_USER_UPN,
        EXPIRED_PASSWORD_USER_OBJECT_ID,
        "Patti Fernandez",
        EXPIRED_PASSWORD_USER_PASSWORD,
    );
    expired_user.password_expired = true;
    let mut admin_user = user(
        ADMIN_UPN,
        ADMIN_OBJECT_ID,
        "MOD Administrator",
        ADMIN_PASSWORD,
    );
    admin_user.global_admin = true;

    let (mail_permissions, mail_consent) = mail_client_consent();
    let (role_permissions, role_grants) = app_only_mail_roles();

    let mut public_app = app(
        PUBLIC_APP_ID,
        PUBLIC_APP_NAME,
        "5e7f1ce0-0000-4000-8000-00000000a001",
    );
    public_app.allow_public_client_flows = true;
    public_app.redirect_uris = strings(&[
        PUBLIC_APP_REDIRECT_URI,
        "https://login.microsoftonline.com/common/oauth2/nativeclient",
    ]);
    public_app.required_permissions = mail_permissions.clone();
    public_app.delegated_grants = mail_consent.clone();
    // The public app may also list the directory's users (Graph `/users`, microsoft.md §8.4), send
    // mail through Graph (`sendMail`, §8.1) and read and change mail (§8.3, §8.5).
    for permission in &mut public_app.required_permissions {
        if permission.resource == MICROSOFT_GRAPH_APP_ID {
            permission.scopes.extend(strings(&[
                "User.ReadBasic.All",
                "Mail.Send",
                "Mail.Read",
                "Mail.ReadWrite",
            ]));
        }
    }
    for grant in &mut public_app.delegated_grants {
        if grant.resource == MICROSOFT_GRAPH_APP_ID {
            grant.scopes.extend(strings(&[
                "User.ReadBasic.All",
                "Mail.Send",
                "Mail.Read",
                "Mail.ReadWrite",
            ]));
        }
    }

    let mut confidential_app = app(
        CONFIDENTIAL_APP_ID,
        CONFIDENTIAL_APP_NAME,
        CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID,
    );
    confidential_app.redirect_uris = strings(&["http://localhost/callback"]);
    confidential_app.secrets = vec![ClientSecret {
        secret_id: CONFIDENTIAL_APP_SECRET_ID.into(),
        value: CONFIDENTIAL_APP_SECRET.into(),
        expires_at_unix: None,
        display_name: "demo".into(),
        start_at_unix: None,
    }];
    confidential_app.certificates = vec![AppCertificate {
        pem: certificate().certificate_pem.clone(),
        expires_at_unix: None,
        key_id: String::new(),
        display_name: "demo".into(),
        start_at_unix: None,
    }];
    confidential_app.required_permissions =
        [mail_permissions.clone(), role_permissions.clone()].concat();
    confidential_app.delegated_grants = mail_consent.clone();
    confidential_app.app_role_grants = role_grants.clone();

    let mut no_consent_app = app(
        NO_CONSENT_APP_ID,
        "Unconsented mail client",
        "5e7f1ce0-0000-4000-8000-00000000a003",
    );
    no_consent_app.allow_public_client_flows = true;
    no_consent_app.redirect_uris = strings(&[PUBLIC_APP_REDIRECT_URI]);
    no_consent_app.required_permissions = mail_permissions.clone();

    let mut no_public_flows_app = app(
        NO_PUBLIC_FLOWS_APP_ID,
        "Mail client without public client flows",
        "5e7f1ce0-0000-4000-8000-00000000a004",
    );
    no_public_flows_app.redirect_uris = strings(&[PUBLIC_APP_REDIRECT_URI]);
    no_public_flows_app.required_permissions = mail_permissions.clone();
    no_public_flows_app.delegated_grants = mail_consent.clone();

    let mut expired_secret_app = app(
        EXPIRED_SECRET_APP_ID,
        "Daemon with an expired secret",
        "5e7f1ce0-0000-4000-8000-00000000a005",
    );
    expired_secret_app.secrets = vec![ClientSecret {
        secret_id: EXPIRED_SECRET_APP_SECRET_ID.into(),
        value: EXPIRED_SECRET_APP_SECRET.into(),
        // 2020-09-13: long past, whatever the clock says.
        expires_at_unix: Some(1_600_000_000),
        display_name: "expired".into(),
        start_at_unix: None,
    }];
    expired_secret_app.required_permissions = role_permissions;
    expired_secret_app.app_role_grants = role_grants;

    let mut disabled_app = app(
        DISABLED_APP_ID,
        "Disabled mail client",
        "5e7f1ce0-0000-4000-8000-00000000a006",
    );
    disabled_app.allow_public_client_flows = true;
    disabled_app.redirect_uris = strings(&[PUBLIC_APP_REDIRECT_URI]);
    disabled_app.required_permissions = mail_permissions;
    disabled_app.delegated_grants = mail_consent;
    disabled_app.enabled = false;

    let mailbox = |address: &str, display_name: &str, owner: Option<&str>| Mailbox {
        address: address.into(),
        display_name: display_name.into(),
        owner_upn: owner.map(Into::into),
        shared: owner.is_none(),
        full_access_users: Vec::new(),
        send_as_users: Vec::new(),
        protocols: None,
    };
    let mut shared_mailbox = mailbox(SHARED_MAILBOX, "Contoso Support", None);
    shared_mailbox.full_access_users = strings(&[USER_UPN]);

    TenantModel {
        tenants: vec![Tenant {
            id: TENANT_ID.into(),
            display_name: TENANT_DISPLAY_NAME.into(),
            domains: strings(&[DOMAIN]),
            users: vec![
                user(USER_UPN, USER_OBJECT_ID, USER_DISPLAY_NAME, USER_PASSWORD),
                user(
                    SECOND_USER_UPN,
                    SECOND_USER_OBJECT_ID,
                    "Alex Wilber",
                    SECOND_USER_PASSWORD,
                ),
                mfa_user,
                disabled_user,
                locked_user,
                expired_user,
                admin_user,
            ],
            apps: vec![
                public_app,
                confidential_app,
                no_consent_app,
                no_public_flows_app,
                expired_secret_app,
                disabled_app,
            ],
            resources: default_resources(),
            mailboxes: vec![
                mailbox(USER_UPN, USER_DISPLAY_NAME, Some(USER_UPN)),
                mailbox(SECOND_USER_UPN, "Alex Wilber", Some(SECOND_USER_UPN)),
                mailbox(MFA_USER_UPN, "Megan Bowen", Some(MFA_USER_UPN)),
                shared_mailbox,
            ],
            exchange_service_principals: vec![ExchangeServicePrincipal {
                app_id: CONFIDENTIAL_APP_ID.into(),
                service_principal_object_id: CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID.into(),
                display_name: CONFIDENTIAL_APP_NAME.into(),
                full_access_mailboxes: strings(&[USER_UPN, SHARED_MAILBOX]),
                send_as_mailboxes: strings(&[USER_UPN, SHARED_MAILBOX]),
            }],
            protocols: ProtocolSwitches::default(),
            basic_auth_disabled: false,
        }],
    }
}
