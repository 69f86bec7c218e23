//! One bearer-token check for every resource the sandbox serves (IMAP, POP3, SMTP, Graph): signature,
//! expiry, issuer, audience, scope or role, and the identity behind the token — a [`Principal`] or a typed
//! [`BearerRefusal`]. What a protocol then says to the client (Exchange's `NO AUTHENTICATE failed.`, Graph's
//! 401 JSON) is the protocol's business; mailbox rights (FullAccess, the Exchange service principal) are
//! checked by the mailbox layer on top of the principal.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::identity::crypto::SigningKey;
use crate::tenant::{EXCHANGE_ONLINE_APP_ID, MICROSOFT_GRAPH_APP_ID, TenantModel};

/// What a resource requires of a token: which resource it must be for, and the delegated scope or the
/// application role that grants the operation (any one of several, where higher privileges grant it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The resource's application id (its identifier URIs are accepted as `aud` too).
    pub resource_app_id: &'static str,
    /// The delegated permission (`scp`): the least privileged one, named in a refusal.
    pub scope: &'static str,
    /// The application permission (`roles`): the least privileged one, named in a refusal.
    pub role: &'static str,
    /// Further delegated permissions that grant the operation as well.
    pub other_scopes: &'static [&'static str],
    /// Further application permissions that grant the operation as well.
    pub other_roles: &'static [&'static str],
}

impl Requirement {
    /// Exchange Online IMAP.
    pub const IMAP: Self = Self {
        resource_app_id: EXCHANGE_ONLINE_APP_ID,
        scope: "IMAP.AccessAsUser.All",
        role: "IMAP.AccessAsApp",
        other_scopes: &[],
        other_roles: &[],
    };
    /// Exchange Online POP3.
    pub const POP: Self = Self {
        resource_app_id: EXCHANGE_ONLINE_APP_ID,
        scope: "POP.AccessAsUser.All",
        role: "POP.AccessAsApp",
        other_scopes: &[],
        other_roles: &[],
    };
    /// Exchange Online SMTP submission.
    pub const SMTP: Self = Self {
        resource_app_id: EXCHANGE_ONLINE_APP_ID,
        scope: "SMTP.Send",
        role: "SMTP.SendAsApp",
        other_scopes: &[],
        other_roles: &[],
    };
    /// Microsoft Graph sendMail.
    pub const GRAPH_MAIL_SEND: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "Mail.Send",
        role: "Mail.Send",
        other_scopes: &[],
        other_roles: &[],
    };
    /// Microsoft Graph: read mail (folders, messages, `$value`, delta), microsoft.md §8.5: `Mail.Read`, or
    /// `Mail.ReadWrite`, which grants reading too; delegated or application alike.
    pub const GRAPH_MAIL_READ: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "Mail.Read",
        role: "Mail.Read",
        other_scopes: &["Mail.ReadWrite"],
        other_roles: &["Mail.ReadWrite"],
    };
    /// Microsoft Graph: change mail (PATCH, move, copy, delete, drafts, attachments, upload sessions):
    /// `Mail.ReadWrite` (microsoft.md §8.3), delegated or application.
    pub const GRAPH_MAIL_READ_WRITE: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "Mail.ReadWrite",
        role: "Mail.ReadWrite",
        other_scopes: &[],
        other_roles: &[],
    };
    /// Microsoft Graph: list and read users (`/users`, `/users/{id}`), microsoft.md §8.4: application
    /// `User.Read.All` or `Directory.Read.All`; delegated `User.ReadBasic.All` or higher.
    pub const GRAPH_USERS_READ: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "User.ReadBasic.All",
        role: "User.Read.All",
        other_scopes: &["User.Read.All", "Directory.Read.All"],
        other_roles: &["Directory.Read.All"],
    };
    /// Microsoft Graph: read applications, service principals and their grants (microsoft.md §9.4):
    /// `Application.Read.All` or any of the write permissions of setup (the sandbox's leniency for reads).
    pub const GRAPH_APPLICATIONS_READ: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "Application.Read.All",
        role: "Application.Read.All",
        other_scopes: &[
            "Application.ReadWrite.All",
            "AppRoleAssignment.ReadWrite.All",
            "DelegatedPermissionGrant.ReadWrite.All",
            "Directory.Read.All",
        ],
        other_roles: &[
            "Application.ReadWrite.All",
            "AppRoleAssignment.ReadWrite.All",
            "DelegatedPermissionGrant.ReadWrite.All",
            "Directory.Read.All",
        ],
    };
    /// Microsoft Graph: create and change applications and service principals, add and remove passwords:
    /// `Application.ReadWrite.All`.
    pub const GRAPH_APPLICATIONS_WRITE: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "Application.ReadWrite.All",
        role: "Application.ReadWrite.All",
        other_scopes: &[],
        other_roles: &[],
    };
    /// Microsoft Graph: grant application permissions (`appRoleAssignedTo`): `AppRoleAssignment.ReadWrite.All`.
    pub const GRAPH_APP_ROLE_ASSIGNMENTS_WRITE: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "AppRoleAssignment.ReadWrite.All",
        role: "AppRoleAssignment.ReadWrite.All",
        other_scopes: &[],
        other_roles: &[],
    };
    /// Microsoft Graph: grant delegated permissions (`oauth2PermissionGrants`):
    /// `DelegatedPermissionGrant.ReadWrite.All`.
    pub const GRAPH_DELEGATED_GRANTS_WRITE: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "DelegatedPermissionGrant.ReadWrite.All",
        role: "DelegatedPermissionGrant.ReadWrite.All",
        other_scopes: &[],
        other_roles: &[],
    };
    /// Microsoft Graph: the signed-in user's profile (`/me`): delegated `User.Read` or any permission that
    /// reads all users. The roles only matter to tell an app-only token apart: `/me` refuses those anyway.
    pub const GRAPH_ME: Self = Self {
        resource_app_id: MICROSOFT_GRAPH_APP_ID,
        scope: "User.Read",
        role: "User.Read.All",
        other_scopes: &["User.ReadBasic.All", "User.Read.All", "Directory.Read.All"],
        other_roles: &["Directory.Read.All"],
    };
}

impl Requirement {
    /// Whether a delegated permission the token carries grants the operation.
    fn granted_by_scope(&self, scope: &str) -> bool {
        std::iter::once(self.scope)
            .chain(self.other_scopes.iter().copied())
            .any(|wanted| wanted.eq_ignore_ascii_case(scope))
    }

    /// Whether an application permission the token carries grants the operation.
    fn granted_by_role(&self, role: &str) -> bool {
        std::iter::once(self.role)
            .chain(self.other_roles.iter().copied())
            .any(|wanted| wanted.eq_ignore_ascii_case(role))
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user's (delegated) token.
    User {
        /// The tenant id.
        tenant_id: String,
        /// The user's UPN, as in the directory.
        upn: String,
        /// The user's object id.
        object_id: String,
        /// The client app that got the token.
        app_id: String,
    },
    /// An application's (app-only) token.
    App {
        /// The tenant id.
        tenant_id: String,
        /// The app's client id.
        app_id: String,
        /// The app's service principal object id.
        service_principal_id: String,
    },
}

/// Why a token does not grant the operation.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerRefusal {
    /// Not a JWT, or claims missing or of the wrong type.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// Not signed by this sandbox's key.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token expired at {expired_at}")]
    Expired {
        /// `exp`, Unix seconds.
        expired_at: u64,
    },
    /// `nbf` is in the future.
    #[error("the token is not valid before {not_before}")]
    NotYetValid {
        /// `nbf`, Unix seconds.
        not_before: u64,
    },
    /// The issuer or tenant is not one of this sandbox's.
    #[error("the token was issued for another tenant ({tenant})")]
    UnknownTenant {
        /// `tid`.
        tenant: String,
    },
    /// The token is for another resource.
    #[error("the token's audience {audience:?} is not this resource")]
    WrongAudience {
        /// `aud`.
        audience: String,
    },
    /// A delegated token without the scope.
    #[error("the token's scopes do not include {needed}")]
    MissingScope {
        /// The scope needed.
        needed: &'static str,
    },
    /// An app-only token without the role.
    #[error("the token's roles do not include {needed}")]
    MissingRole {
        /// The role needed.
        needed: &'static str,
    },
    /// The user or app the token names no longer exists, or is disabled.
    #[error("the token's {what} {id} does not exist or is disabled")]
    UnknownIdentity {
        /// `user` or `app`.
        what: &'static str,
        /// Its id.
        id: String,
    },
}

#[derive(Deserialize)]
struct Claims {
    aud: String,
    iss: String,
    tid: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    appid: String,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    idtyp: Option<String>,
}

/// The `exp` claim (Unix seconds) of a token already validated, read without checking anything again.
pub(crate) fn token_expiry(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

/// Checks `token` for `requirement` at `now` (Unix seconds) against the sandbox's key and directory. No
/// leeway: the sandbox's clock is the issuer's clock, and tests move it to exact instants.
pub(crate) fn validate_bearer(
    key: &SigningKey,
    directory: &TenantModel,
    now: u64,
    token: &str,
    requirement: Requirement,
) -> Result<Principal, BearerRefusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| BearerRefusal::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(BearerRefusal::BadSignature);
    }
    let mut validation = Validation::new(Algorithm::RS256);
    // Time, audience and issuer are checked below, each with its own refusal.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let decoding = DecodingKey::from_rsa_components(&key.modulus_b64url, &key.exponent_b64url)
        .map_err(|_| BearerRefusal::BadSignature)?;
    let claims = match jsonwebtoken::decode::<Claims>(token, &decoding, &validation) {
        Ok(data) => data.claims,
        Err(error) => {
            return Err(match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => BearerRefusal::BadSignature,
                _ => BearerRefusal::Malformed,
            });
        }
    };
    if now >= claims.exp {
        return Err(BearerRefusal::Expired {
            expired_at: claims.exp,
        });
    }
    if let Some(not_before) = claims.nbf.filter(|nbf| *nbf > now) {
        return Err(BearerRefusal::NotYetValid { not_before });
    }
    let unknown_tenant = || BearerRefusal::UnknownTenant {
        tenant: claims.tid.clone(),
    };
    let tenant = directory
        .tenants
        .iter()
        .find(|t| t.id.eq_ignore_ascii_case(&claims.tid))
        .ok_or_else(unknown_tenant)?;
    if claims.iss != format!("https://sts.windows.net/{}/", tenant.id) {
        return Err(unknown_tenant());
    }
    let resource = tenant.resource(&claims.aud);
    if resource.is_none_or(|r| !r.app_id.eq_ignore_ascii_case(requirement.resource_app_id)) {
        return Err(BearerRefusal::WrongAudience {
            audience: claims.aud,
        });
    }
    let app_only =
        claims.idtyp.as_deref() == Some("app") || (claims.scp.is_none() && claims.roles.is_some());
    if app_only {
        let has_role = claims
            .roles
            .iter()
            .flatten()
            .any(|r| requirement.granted_by_role(r));
        if !has_role {
            return Err(BearerRefusal::MissingRole {
                needed: requirement.role,
            });
        }
        let app = tenant
            .app(&claims.appid)
            .filter(|app| app.enabled)
            .ok_or_else(|| BearerRefusal::UnknownIdentity {
                what: "app",
                id: claims.appid.clone(),
            })?;
        let service_principal_id = app
            .service_principal_id()
            .unwrap_or(&app.client_id)
            .to_owned();
        return Ok(Principal::App {
            tenant_id: tenant.id.clone(),
            app_id: app.client_id.clone(),
            service_principal_id,
        });
    }
    let has_scope = claims
        .scp
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .any(|s| requirement.granted_by_scope(s));
    if !has_scope {
        return Err(BearerRefusal::MissingScope {
            needed: requirement.scope,
        });
    }
    let object_id = claims.oid.unwrap_or_default();
    let user = tenant
        .users
        .iter()
        .find(|u| u.object_id.eq_ignore_ascii_case(&object_id))
        .filter(|u| !u.disabled)
        .ok_or_else(|| BearerRefusal::UnknownIdentity {
            what: "user",
            id: object_id.clone(),
        })?;
    Ok(Principal::User {
        tenant_id: tenant.id.clone(),
        upn: user.upn.clone(),
        object_id: user.object_id.clone(),
        app_id: claims.appid,
    })
}
