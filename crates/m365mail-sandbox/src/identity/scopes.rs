//! Parsing the `scope` parameter into one resource plus OpenID Connect scopes, and checking consent.

use crate::{
    identity::errors::EntraError,
    tenant::{AppRegistration, ResourceApi, Tenant},
};

/// Scopes that name no resource: they shape the response (id token, refresh token).
pub(crate) const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The resource a request targets and how it was named.
#[derive(Debug, Clone)]
pub(crate) struct ResourceSelection {
    pub(crate) resource: ResourceApi,
    /// The identifier the client used (`https://outlook.office.com`), which becomes `aud`.
    pub(crate) audience: String,
    /// `None` for `.default`; otherwise the named scopes in the resource's own spelling.
    pub(crate) named_scopes: Option<Vec<String>>,
}

/// A parsed delegated `scope` parameter.
#[derive(Debug, Clone)]
pub(crate) struct DelegatedScopes {
    pub(crate) oidc: Vec<String>,
    pub(crate) selection: ResourceSelection,
}

impl DelegatedScopes {
    pub(crate) fn wants(&self, oidc_scope: &str) -> bool {
        self.oidc.iter().any(|scope| scope == oidc_scope)
    }
}

/// One scope item split into (resource identifier, permission name). A bare name (`User.Read`) has no
/// identifier.
fn split_scope(item: &str) -> (Option<&str>, &str) {
    match item.rfind('/') {
        Some(slash) => (Some(&item[..slash]), &item[slash + 1..]),
        None => (None, item),
    }
}

fn find_resource(tenant: &Tenant, identifier: Option<&str>) -> Option<(ResourceApi, String)> {
    match identifier {
        Some(identifier) => tenant.resource(identifier).map(|resource| {
            (
                resource.clone(),
                identifier.trim_end_matches('/').to_string(),
            )
        }),
        None => tenant
            .resources
            .iter()
            .find(|resource| resource.default_for_short_scopes)
            .map(|resource| {
                let audience = resource
                    .identifier_uris
                    .first()
                    .cloned()
                    .unwrap_or_else(|| resource.app_id.clone());
                (resource.clone(), audience)
            }),
    }
}

/// Parses a delegated request's scopes: one resource (or none, meaning Microsoft Graph), named scopes
/// or `.default`, plus OIDC scopes.
pub(crate) fn parse_delegated(tenant: &Tenant, raw: &str) -> Result<DelegatedScopes, EntraError> {
    let mut oidc = Vec::new();
    let mut selection: Option<ResourceSelection> = None;
    for item in raw.split_whitespace() {
        if let Some(oidc_scope) = OIDC_SCOPES
            .iter()
            .find(|oidc_scope| oidc_scope.eq_ignore_ascii_case(item))
        {
            if !oidc.iter().any(|existing| existing == oidc_scope) {
                oidc.push(oidc_scope.to_string());
            }
            continue;
        }
        let (identifier, name) = split_scope(item);
        if name.is_empty() {
            return Err(EntraError::invalid_scope(item));
        }
        let (resource, audience) = find_resource(tenant, identifier).ok_or_else(|| {
            EntraError::resource_not_found(identifier.unwrap_or(item), &tenant.id)
        })?;
        let named = if name == ".default" {
            None
        } else {
            let canonical = resource
                .scopes
                .iter()
                .find(|defined| defined.eq_ignore_ascii_case(name))
                .ok_or_else(|| EntraError::invalid_scope(item))?;
            Some(canonical.clone())
        };
        match &mut selection {
            None => {
                selection = Some(ResourceSelection {
                    resource,
                    audience,
                    named_scopes: named.map(|name| vec![name]),
                })
            }
            Some(existing) if existing.resource.app_id != resource.app_id => {
                return Err(EntraError::multiple_resources(raw));
            }
            Some(existing) => match (&mut existing.named_scopes, named) {
                (Some(names), Some(name)) => {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                (None, None) => {}
                // `.default` cannot be combined with named scopes of the same resource.
                _ => return Err(EntraError::invalid_scope(raw)),
            },
        }
    }
    let selection = match selection {
        Some(selection) => selection,
        // Only OIDC scopes: Entra issues a Microsoft Graph token for the consented scopes.
        None => {
            let (resource, audience) =
                find_resource(tenant, None).ok_or_else(|| EntraError::invalid_scope(raw))?;
            ResourceSelection {
                resource,
                audience,
                named_scopes: None,
            }
        }
    };
    Ok(DelegatedScopes { oidc, selection })
}

/// Parses a client-credentials scope: exactly one `{resource}/.default`.
pub(crate) fn parse_app_only(tenant: &Tenant, raw: &str) -> Result<ResourceSelection, EntraError> {
    let mut selection: Option<ResourceSelection> = None;
    for item in raw.split_whitespace() {
        let (identifier, name) = split_scope(item);
        let Some(identifier) = identifier.filter(|_| name == ".default") else {
            return Err(EntraError::scope_not_default(item));
        };
        let (resource, audience) = find_resource(tenant, Some(identifier))
            .ok_or_else(|| EntraError::resource_not_found(identifier, &tenant.id))?;
        match &selection {
            Some(existing) if existing.resource.app_id != resource.app_id => {
                return Err(EntraError::multiple_resources(raw));
            }
            Some(_) => {}
            None => {
                selection = Some(ResourceSelection {
                    resource,
                    audience,
                    named_scopes: None,
                })
            }
        }
    }
    selection.ok_or_else(|| EntraError::missing_parameter("scope"))
}

/// The delegated scopes the token may carry: every named scope must be consented (admin or this user),
/// `.default` means "all consented scopes the resource defines". Missing consent gives AADSTS65001.
pub(crate) fn consented_delegated_scopes(
    app: &AppRegistration,
    selection: &ResourceSelection,
    upn: &str,
) -> Result<Vec<String>, EntraError> {
    let consented = app.consented_scopes(&selection.resource.app_id, upn);
    let is_consented = |name: &str| {
        consented
            .iter()
            .any(|granted| granted.eq_ignore_ascii_case(name))
    };
    let granted: Vec<String> = match &selection.named_scopes {
        Some(names) => {
            if names.iter().all(|name| is_consented(name)) {
                names.clone()
            } else {
                Vec::new()
            }
        }
        None => selection
            .resource
            .scopes
            .iter()
            .filter(|defined| is_consented(defined))
            .cloned()
            .collect(),
    };
    if granted.is_empty() {
        return Err(EntraError::consent_required(
            &app.client_id,
            &app.display_name,
        ));
    }
    Ok(granted)
}

/// The `scope` value of a token response: full URIs for most resources, short names for Graph.
pub(crate) fn response_scope(
    selection: &ResourceSelection,
    granted: &[String],
    oidc: &[String],
) -> String {
    let resource_scopes = granted.iter().map(|name| {
        if selection.resource.default_for_short_scopes {
            name.clone()
        } else {
            format!("{}/{name}", selection.audience)
        }
    });
    resource_scopes
        .chain(oidc.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}
