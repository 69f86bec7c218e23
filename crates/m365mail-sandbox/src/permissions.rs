//! Permission ids: the GUIDs of the application permissions (`appRoles[].id`) and delegated permissions
//! (`oauth2PermissionScopes[].id`) the resource service principals show through Graph
//! (`GET /v1.0/servicePrincipals(appId='…')`), and that `requiredResourceAccess` and `appRoleAssignedTo`
//! name.
//!
//! The ids in [`KNOWN`] are microsoft.md §9.2's (confirmed or consistent there; SMTP.SendAsApp is
//! unconfirmed). Every other permission a resource of the tenant model defines gets an id derived from the
//! resource and the permission ([`crate::tenant::derived_guid`]): the sandbox's choice, not Microsoft's.
//! Clients must resolve ids at run time from the resource service principal, as on a real tenant
//! (microsoft.md §9.1), and then work against either.

use crate::tenant::{EXCHANGE_ONLINE_APP_ID, MICROSOFT_GRAPH_APP_ID, derived_guid};

/// Whether a permission is an application permission or a delegated one (`requiredResourceAccess`'s
/// `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionKind {
    /// An application permission (app role), `"Role"`.
    Role,
    /// A delegated permission, `"Scope"`.
    Scope,
}

impl PermissionKind {
    /// `Role` or `Scope`, as Graph spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Role => "Role",
            Self::Scope => "Scope",
        }
    }
}

/// A permission whose id microsoft.md §9.2 gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownPermission {
    /// The resource's application id.
    pub resource_app_id: &'static str,
    /// The permission's `value`.
    pub value: &'static str,
    /// Role or scope.
    pub kind: PermissionKind,
    /// Its id.
    pub id: &'static str,
}

const fn known(
    resource_app_id: &'static str,
    value: &'static str,
    kind: PermissionKind,
    id: &'static str,
) -> KnownPermission {
    KnownPermission {
        resource_app_id,
        value,
        kind,
        id,
    }
}

use PermissionKind::{Role, Scope};

const GRAPH: &str = MICROSOFT_GRAPH_APP_ID;
const EXCHANGE: &str = EXCHANGE_ONLINE_APP_ID;

/// microsoft.md §9.2's permission ids.
pub const KNOWN: &[KnownPermission] = &[
    known(
        GRAPH,
        "User.Read.All",
        Role,
        "df021288-bdef-4463-88db-98f22de89214",
    ),
    known(
        GRAPH,
        "Mail.Send",
        Role,
        "b633e1c5-b582-4048-a93e-9f11b44c7e96",
    ),
    known(
        GRAPH,
        "Mail.Read",
        Role,
        "810c84a8-4a9e-49e6-bf7d-12d183f40d01",
    ),
    known(
        GRAPH,
        "Mail.ReadWrite",
        Role,
        "e2a3a72e-5f79-4c64-b1b1-878b674786c9",
    ),
    known(
        GRAPH,
        "User.Read",
        Scope,
        "e1fe6dd8-ba31-4d61-89e7-88639da4683d",
    ),
    known(
        GRAPH,
        "offline_access",
        Scope,
        "7427e0e9-2fba-42fe-b0c0-848c9e6a8182",
    ),
    known(
        GRAPH,
        "openid",
        Scope,
        "37f7f235-527c-4136-accd-4a02d197296e",
    ),
    known(
        GRAPH,
        "profile",
        Scope,
        "14dad69e-099b-42c9-810b-d002981feec1",
    ),
    known(
        GRAPH,
        "email",
        Scope,
        "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0",
    ),
    known(
        GRAPH,
        "IMAP.AccessAsUser.All",
        Scope,
        "652390e4-393a-48de-9484-05f9b1212954",
    ),
    known(
        GRAPH,
        "POP.AccessAsUser.All",
        Scope,
        "d7b7f2d9-0f45-4ea1-9d42-e50810c06991",
    ),
    known(
        GRAPH,
        "SMTP.Send",
        Scope,
        "258f6531-6087-4cc4-bb90-092c5fb3ed3f",
    ),
    known(
        GRAPH,
        "Mail.Send",
        Scope,
        "e383f46e-2787-4529-855e-0e479a3ffac0",
    ),
    known(
        GRAPH,
        "Mail.Read",
        Scope,
        "570282fd-fa5c-430d-a7fd-fc8dc98a9dca",
    ),
    known(
        EXCHANGE,
        "IMAP.AccessAsApp",
        Role,
        "5e5addcd-3e8d-4e90-baf5-964efab2b20a",
    ),
    known(
        EXCHANGE,
        "POP.AccessAsApp",
        Role,
        "cb842b43-da6e-4506-86fe-bb12199c656d",
    ),
    known(
        EXCHANGE,
        "SMTP.SendAsApp",
        Role,
        "7146a1f0-8703-45b3-9eae-527a64c00995",
    ),
    known(
        EXCHANGE,
        "full_access_as_app",
        Role,
        "dc890d15-9560-4a4c-9b7f-a736ec74ec40",
    ),
    known(
        EXCHANGE,
        "Exchange.ManageAsApp",
        Role,
        "dc50a0fb-09a3-484d-be87-e023b12c6440",
    ),
    known(
        EXCHANGE,
        "Mail.Send",
        Role,
        "b633e1c5-b582-4048-a93e-9f11b44c7e96",
    ),
    known(
        EXCHANGE,
        "Mail.Read",
        Role,
        "810c84a8-4a9e-49e6-bf7d-12d183f40d01",
    ),
    known(
        EXCHANGE,
        "Mail.ReadWrite",
        Role,
        "e2a3a72e-5f79-4c64-b1b1-878b674786c9",
    ),
    known(
        EXCHANGE,
        "IMAP.AccessAsUser.All",
        Scope,
        "195adc35-e27b-454b-a7ed-1ecdffa1c09f",
    ),
    known(
        EXCHANGE,
        "POP.AccessAsUser.All",
        Scope,
        "fb698133-92fa-453e-a9ed-688e10f2e5ac",
    ),
    known(
        EXCHANGE,
        "SMTP.Send",
        Scope,
        "76faac2a-0f20-42f1-928a-50de5b9dbe52",
    ),
    known(
        EXCHANGE,
        "EWS.AccessAsUser.All",
        Scope,
        "3b5f3d61-589b-4a3c-a359-5dd4b5ee5bd5",
    ),
];

/// The OpenID Connect scopes Microsoft Graph's service principal lists among its delegated permissions
/// (the token endpoint treats them apart, see `identity::scopes`).
pub const GRAPH_OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The id of a permission: microsoft.md §9.2's when listed in [`KNOWN`], else one derived from the
/// resource, kind and value.
pub fn permission_id(resource_app_id: &str, kind: PermissionKind, value: &str) -> String {
    KNOWN
        .iter()
        .find(|known| {
            known.kind == kind
                && known.resource_app_id.eq_ignore_ascii_case(resource_app_id)
                && known.value.eq_ignore_ascii_case(value)
        })
        .map(|known| known.id.to_owned())
        .unwrap_or_else(|| derived_guid(&["permission", resource_app_id, kind.as_str(), value]))
}

/// Whether a delegated permission needs an administrator's consent (`type: "Admin"`). The sandbox's
/// approximation: the directory-wide permissions; everything else is user-consentable.
pub fn scope_needs_admin(value: &str) -> bool {
    [
        "User.Read.All",
        "Directory.Read.All",
        "Application.Read.All",
        "Application.ReadWrite.All",
        "AppRoleAssignment.ReadWrite.All",
        "DelegatedPermissionGrant.ReadWrite.All",
    ]
    .iter()
    .any(|admin| admin.eq_ignore_ascii_case(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids_win_and_the_rest_are_stable_and_distinct() {
        assert_eq!(
            permission_id(EXCHANGE, Role, "imap.accessasapp"),
            "5e5addcd-3e8d-4e90-baf5-964efab2b20a"
        );
        let derived = permission_id(GRAPH, Scope, "Mail.ReadWrite");
        assert_eq!(derived, permission_id(GRAPH, Scope, "Mail.ReadWrite"));
        assert_ne!(derived, permission_id(GRAPH, Role, "Mail.ReadWrite"));
        assert!(uuid::Uuid::parse_str(&derived).is_ok());
    }
}
