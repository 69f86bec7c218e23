//! `GET /v1.0/users`, `GET /v1.0/users/{id | userPrincipalName}` and `GET /v1.0/me` (microsoft.md §8.4).
//!
//! Users are the directory's users of the token's tenant, in the directory's order, disabled ones included
//! (Graph lists them, with `accountEnabled: false`). Without `$select` each user has Graph's default
//! properties: `businessPhones` (`[]`), `displayName`, `givenName`, `id` (object id), `jobTitle`, `mail`
//! (the address of the user's own mailbox, `null` without one, like an unlicensed user), `mobilePhone`,
//! `officeLocation`, `preferredLanguage`, `surname`, `userPrincipalName`, `null` where the model has nothing.
//!
//! Query options of the list:
//! - `$select=a,b`: only those properties (case-insensitive names; the defaults plus `accountEnabled`,
//!   `mailNickname`, `userType`, `otherMails`, `proxyAddresses`, `department`, `companyName`,
//!   `usageLocation`). Another name: 400 `Request_BadRequest`. Honoured by the single-user routes too.
//! - `$top=N`: 1..=999, default 100; more users give `@odata.nextLink`, an absolute URL on the host the
//!   client used: `…/v1.0/users?$skiptoken=…`, the token (opaque) carrying the position, `$top`, `$select`
//!   and `$filter`. With `$skiptoken` the request's other options are not looked at.
//! - `$filter`: `startswith(displayName|userPrincipalName|mail,'x')`, `displayName|userPrincipalName|mail|id
//!   eq 'x'` (strings compared without case, as the directory does), `accountEnabled eq true|false`.
//!   Anything else: 400 `Request_UnsupportedQuery`.
//! - `$skip`: 400 `Request_BadRequest` ("'$skip' is not supported by the service.": Graph has no `$skip`
//!   for directory objects). Other `$` options (`$orderby`, `$count`, `$search`, `$expand`, …): 400
//!   `Request_UnsupportedQuery` (not modelled). A `$` option given twice: 400 `Request_BadRequest`.
//!
//! Permissions ([`Requirement::GRAPH_USERS_READ`], [`Requirement::GRAPH_ME`]): the list and
//! `/users/{id}` need application `User.Read.All` or `Directory.Read.All`, or delegated
//! `User.ReadBasic.All`, `User.Read.All` or `Directory.Read.All`; a delegated `User.Read` token may read its
//! own user through `/users/{id}` as well as `/me`. The sandbox does not narrow the properties a
//! `User.ReadBasic.All` token sees.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, Uri},
    response::Response,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{GraphError, METADATA, bearer_token, graph_json, request_base};
use crate::{
    identity::{
        bearer::{BearerRefusal, Principal, Requirement},
        state::IdentityState,
    },
    sync::lock,
    tenant::{Tenant, TenantModel, User},
};

/// Graph's default properties of a user, in Graph's order.
const DEFAULT_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

/// Further properties `$select` may name.
const OTHER_PROPERTIES: [&str; 8] = [
    "accountEnabled",
    "companyName",
    "department",
    "mailNickname",
    "otherMails",
    "proxyAddresses",
    "usageLocation",
    "userType",
];

const DEFAULT_TOP: usize = 100;
const MAX_TOP: usize = 999;

/// The address of the user's own mailbox, if the tenant has one.
fn mail_of<'t>(tenant: &'t Tenant, user: &User) -> Option<&'t str> {
    tenant
        .mailboxes
        .iter()
        .find(|mailbox| {
            !mailbox.shared
                && mailbox
                    .owner_upn
                    .as_deref()
                    .is_some_and(|owner| owner.eq_ignore_ascii_case(&user.upn))
        })
        .map(|mailbox| mailbox.address.as_str())
}

/// One property of a user as Graph shows it (`name` is canonical).
fn property(tenant: &Tenant, user: &User, name: &str) -> Value {
    let mail = mail_of(tenant, user);
    match name {
        "businessPhones" | "otherMails" => json!([]),
        "displayName" if !user.display_name.is_empty() => json!(user.display_name),
        "id" => json!(user.object_id),
        "mail" => json!(mail),
        "userPrincipalName" => json!(user.upn),
        "accountEnabled" => json!(!user.disabled),
        "mailNickname" => json!(user.upn.split('@').next().unwrap_or_default()),
        "userType" => json!("Member"),
        "proxyAddresses" => json!(
            mail.map(|address| vec![format!("SMTP:{address}")])
                .unwrap_or_default()
        ),
        _ => Value::Null,
    }
}

/// The user's JSON object with `properties`, in that order.
fn user_json(tenant: &Tenant, user: &User, properties: &[&'static str]) -> Map<String, Value> {
    properties
        .iter()
        .map(|name| ((*name).to_owned(), property(tenant, user, name)))
        .collect()
}

/// A parsed `$select`: canonical property names in the order given.
fn parse_select(raw: &str) -> Result<Vec<&'static str>, GraphError> {
    let mut selected = Vec::new();
    for item in raw.split(',').map(str::trim) {
        let canonical = DEFAULT_PROPERTIES
            .iter()
            .chain(OTHER_PROPERTIES.iter())
            .find(|known| known.eq_ignore_ascii_case(item))
            .ok_or_else(|| {
                GraphError::bad_request(
                    "Request_BadRequest",
                    format!(
                        "Could not find a property named '{item}' on type 'microsoft.graph.user'."
                    ),
                )
            })?;
        if !selected.contains(canonical) {
            selected.push(*canonical);
        }
    }
    Ok(selected)
}

/// `@odata.context` of a user collection (`/$entity` appended for one user).
fn context(selected: Option<&[&'static str]>) -> String {
    match selected {
        Some(names) => format!("{METADATA}#users({})", names.join(",")),
        None => format!("{METADATA}#users"),
    }
}

/// The string properties a filter can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StringProperty {
    DisplayName,
    UserPrincipalName,
    Mail,
    Id,
}

impl StringProperty {
    fn parse(name: &str) -> Option<Self> {
        [
            ("displayName", Self::DisplayName),
            ("userPrincipalName", Self::UserPrincipalName),
            ("mail", Self::Mail),
            ("id", Self::Id),
        ]
        .into_iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, property)| property)
    }

    fn value<'a>(self, tenant: &'a Tenant, user: &'a User) -> Option<&'a str> {
        match self {
            Self::DisplayName => Some(user.display_name.as_str()),
            Self::UserPrincipalName => Some(user.upn.as_str()),
            Self::Mail => mail_of(tenant, user),
            Self::Id => Some(user.object_id.as_str()),
        }
    }
}

/// The `$filter` forms the sandbox models.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    StartsWith(StringProperty, String),
    Equals(StringProperty, String),
    AccountEnabled(bool),
}

impl Filter {
    fn parse(raw: &str) -> Result<Self, GraphError> {
        let text = raw.trim();
        let unsupported = || {
            GraphError::unsupported_query(format!(
                "The sandbox does not model the filter '{text}'. It models \
                 startswith(displayName|userPrincipalName|mail,'…'), \
                 displayName|userPrincipalName|mail|id eq '…' and accountEnabled eq true|false."
            ))
        };
        let unsupported_property = |name: &str| {
            GraphError::unsupported_query(format!(
                "Unsupported or invalid query filter clause specified for property '{name}' of resource 'User'."
            ))
        };
        const STARTSWITH: &str = "startswith(";
        if text
            .get(..STARTSWITH.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(STARTSWITH))
        {
            let inner = text[STARTSWITH.len()..]
                .strip_suffix(')')
                .ok_or_else(unsupported)?;
            let (name, literal) = inner.split_once(',').ok_or_else(unsupported)?;
            let name = name.trim();
            let property = StringProperty::parse(name)
                .filter(|property| *property != StringProperty::Id)
                .ok_or_else(|| unsupported_property(name))?;
            let prefix = string_literal(literal.trim()).ok_or_else(unsupported)?;
            return Ok(Self::StartsWith(property, prefix));
        }
        let (name, rest) = text
            .split_once(char::is_whitespace)
            .ok_or_else(unsupported)?;
        let rest = rest.trim_start();
        let (operator, operand) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(unsupported)?;
        if !operator.eq_ignore_ascii_case("eq") {
            return Err(unsupported());
        }
        let operand = operand.trim();
        if name.eq_ignore_ascii_case("accountEnabled") {
            return match operand {
                "true" => Ok(Self::AccountEnabled(true)),
                "false" => Ok(Self::AccountEnabled(false)),
                _ => Err(unsupported()),
            };
        }
        let property = StringProperty::parse(name).ok_or_else(|| unsupported_property(name))?;
        let value = string_literal(operand).ok_or_else(unsupported)?;
        Ok(Self::Equals(property, value))
    }

    fn matches(&self, tenant: &Tenant, user: &User) -> bool {
        match self {
            Self::StartsWith(property, prefix) => property
                .value(tenant, user)
                .and_then(|value| value.get(..prefix.len()))
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix)),
            Self::Equals(property, wanted) => property
                .value(tenant, user)
                .is_some_and(|value| value.eq_ignore_ascii_case(wanted)),
            Self::AccountEnabled(enabled) => user.disabled != *enabled,
        }
    }
}

/// An OData string literal: `'…'` with `''` for a quote inside.
pub(super) fn string_literal(text: &str) -> Option<String> {
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut value = String::new();
    let mut characters = inner.chars();
    while let Some(character) = characters.next() {
        if character == '\'' {
            // Inside the literal a quote is only valid doubled.
            if characters.next() != Some('\'') {
                return None;
            }
        }
        value.push(character);
    }
    Some(value)
}

/// The query string as (name, value) pairs; a `$` option given twice is Graph's 400.
pub(super) fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, GraphError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if name.starts_with('$')
            && pairs
                .iter()
                .any(|(seen, _)| seen.eq_ignore_ascii_case(&name))
        {
            return Err(GraphError::bad_request(
                "Request_BadRequest",
                format!(
                    "Query option '{name}' was specified more than once, but it must be specified at most once."
                ),
            ));
        }
        pairs.push((name.into_owned(), value.into_owned()));
    }
    Ok(pairs)
}

pub(super) fn option<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Where a page of the list starts, and the options it was asked with: the `$skiptoken`'s content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PageToken {
    #[serde(rename = "o")]
    offset: usize,
    #[serde(rename = "t")]
    top: usize,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    select: Option<String>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
}

impl PageToken {
    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(token: &str) -> Result<Self, GraphError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Self>(&bytes).ok())
            .filter(|page| (1..=MAX_TOP).contains(&page.top))
            .ok_or_else(|| {
                GraphError::bad_request(
                    "Directory_ExpiredPageToken",
                    "The specified page token value has expired and can no longer be included in your request.",
                )
            })
    }
}

/// The list's query options: from a `$skiptoken`, or from the request.
fn list_options(pairs: &[(String, String)]) -> Result<PageToken, GraphError> {
    for (name, _) in pairs.iter().filter(|(name, _)| name.starts_with('$')) {
        match name.to_ascii_lowercase().as_str() {
            "$select" | "$filter" | "$top" | "$skiptoken" => {}
            "$skip" => {
                return Err(GraphError::bad_request(
                    "Request_BadRequest",
                    "'$skip' is not supported by the service.",
                ));
            }
            _ => {
                return Err(GraphError::unsupported_query(format!(
                    "The sandbox does not model the query option '{name}' on users."
                )));
            }
        }
    }
    if let Some(token) = option(pairs, "$skiptoken") {
        return PageToken::decode(token);
    }
    let top = match option(pairs, "$top") {
        None => DEFAULT_TOP,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|top| (1..=MAX_TOP).contains(top))
            .ok_or_else(|| {
                GraphError::bad_request(
                    "Request_BadRequest",
                    format!("Invalid page size specified: '{raw}'. Must be between 1 and {MAX_TOP} inclusive."),
                )
            })?,
    };
    Ok(PageToken {
        offset: 0,
        top,
        select: option(pairs, "$select").map(str::to_owned),
        filter: option(pairs, "$filter").map(str::to_owned),
    })
}

/// The tenant a principal belongs to.
fn tenant_of<'m>(
    directory: &'m TenantModel,
    principal: &Principal,
) -> Result<&'m Tenant, GraphError> {
    let tenant_id = match principal {
        Principal::User { tenant_id, .. } | Principal::App { tenant_id, .. } => tenant_id,
    };
    // The bearer check found the tenant under this same lock.
    directory
        .tenant(tenant_id)
        .ok_or_else(GraphError::insufficient_privileges)
}

/// `GET /v1.0/users`.
pub(super) async fn list(
    State(state): State<Arc<IdentityState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, GraphError> {
    list_users(&state, &uri, &headers)
}

fn list_users(
    state: &IdentityState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, GraphError> {
    let token = bearer_token(headers)?;
    let directory = lock(&state.directory);
    let principal = state
        .check_bearer(&directory, token, Requirement::GRAPH_USERS_READ)
        .map_err(|refusal| GraphError::refused(&refusal))?;
    let tenant = tenant_of(&directory, &principal)?;
    let page = list_options(&query_pairs(uri)?)?;
    let selected = page.select.as_deref().map(parse_select).transpose()?;
    let filter = page.filter.as_deref().map(Filter::parse).transpose()?;
    let matching: Vec<&User> = tenant
        .users
        .iter()
        .filter(|user| {
            filter
                .as_ref()
                .is_none_or(|filter| filter.matches(tenant, user))
        })
        .collect();
    let properties = selected.as_deref().unwrap_or(&DEFAULT_PROPERTIES);
    let value: Vec<Value> = matching
        .iter()
        .skip(page.offset)
        .take(page.top)
        .map(|user| Value::Object(user_json(tenant, user, properties)))
        .collect();
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context(selected.as_deref())));
    let next_offset = page.offset.saturating_add(page.top);
    if next_offset < matching.len() {
        let next = PageToken {
            offset: next_offset,
            ..page
        };
        body.insert(
            "@odata.nextLink".into(),
            json!(format!(
                "{}/v1.0/users?$skiptoken={}",
                request_base(state, uri, headers),
                next.encode()
            )),
        );
    }
    body.insert("value".into(), Value::Array(value));
    Ok(graph_json(Value::Object(body)))
}

/// One user's answer (`/users/{id}`, `/me`), with the request's `$select`.
fn single_user(tenant: &Tenant, user: &User, uri: &Uri) -> Result<Response, GraphError> {
    let pairs = query_pairs(uri)?;
    let selected = option(&pairs, "$select").map(parse_select).transpose()?;
    let properties = selected.as_deref().unwrap_or(&DEFAULT_PROPERTIES);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/$entity", context(selected.as_deref()))),
    );
    body.extend(user_json(tenant, user, properties));
    Ok(graph_json(Value::Object(body)))
}

/// `GET /v1.0/users/{id | userPrincipalName}`.
pub(super) async fn one(
    State(state): State<Arc<IdentityState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, GraphError> {
    one_user(&state, &id, &uri, &headers)
}

fn one_user(
    state: &IdentityState,
    id: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, GraphError> {
    let token = bearer_token(headers)?;
    let directory = lock(&state.directory);
    let (principal, only_self) =
        match state.check_bearer(&directory, token, Requirement::GRAPH_USERS_READ) {
            Ok(principal) => (principal, false),
            // A delegated `User.Read` token may still read its own user.
            Err(BearerRefusal::MissingScope { .. }) => (
                state
                    .check_bearer(&directory, token, Requirement::GRAPH_ME)
                    .map_err(|refusal| GraphError::refused(&refusal))?,
                true,
            ),
            Err(refusal) => return Err(GraphError::refused(&refusal)),
        };
    let tenant = tenant_of(&directory, &principal)?;
    let user = tenant
        .users
        .iter()
        .find(|user| user.object_id.eq_ignore_ascii_case(id) || user.upn.eq_ignore_ascii_case(id));
    if only_self {
        let own_id = match &principal {
            Principal::User { object_id, .. } => Some(object_id),
            Principal::App { .. } => None,
        };
        if user.is_none_or(|user| Some(&user.object_id) != own_id) {
            return Err(GraphError::insufficient_privileges());
        }
    }
    let user = user.ok_or_else(|| GraphError::resource_not_found(id))?;
    single_user(tenant, user, uri)
}

/// `GET /v1.0/me`.
pub(super) async fn me(
    State(state): State<Arc<IdentityState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, GraphError> {
    signed_in_user(&state, &uri, &headers)
}

fn signed_in_user(
    state: &IdentityState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, GraphError> {
    let token = bearer_token(headers)?;
    let directory = lock(&state.directory);
    let principal = match state.check_bearer(&directory, token, Requirement::GRAPH_ME) {
        Ok(principal) => principal,
        // An app-only token has no user, whatever its roles.
        Err(BearerRefusal::MissingRole { .. }) => return Err(GraphError::me_needs_delegated()),
        Err(refusal) => return Err(GraphError::refused(&refusal)),
    };
    let Principal::User { object_id, .. } = &principal else {
        return Err(GraphError::me_needs_delegated());
    };
    let tenant = tenant_of(&directory, &principal)?;
    let user = tenant
        .users
        .iter()
        .find(|user| user.object_id.eq_ignore_ascii_case(object_id))
        .ok_or_else(|| GraphError::resource_not_found(object_id))?;
    single_user(tenant, user, uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_the_modelled_forms_only() {
        assert_eq!(
            Filter::parse("startswith(displayName, 'Ad')").unwrap(),
            Filter::StartsWith(StringProperty::DisplayName, "Ad".into())
        );
        assert_eq!(
            Filter::parse("StartsWith(userPrincipalName,'o''brien')").unwrap(),
            Filter::StartsWith(StringProperty::UserPrincipalName, "o'brien".into())
        );
        assert_eq!(
            Filter::parse("mail eq 'a b@c'").unwrap(),
            Filter::Equals(StringProperty::Mail, "a b@c".into())
        );
        assert_eq!(
            Filter::parse(" accountEnabled  eq false ").unwrap(),
            Filter::AccountEnabled(false)
        );
        for unsupported in [
            "endswith(mail,'x')",
            "jobTitle eq 'x'",
            "mail ne 'x'",
            "mail eq x",
            "mail eq 'a'b'",
            "startswith(id,'a')",
            "accountEnabled eq 1",
            "mail eq 'a' and id eq 'b'",
            "",
        ] {
            let error = Filter::parse(unsupported).unwrap_err();
            assert_eq!(error.code, "Request_UnsupportedQuery", "{unsupported}");
        }
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        let page = PageToken {
            offset: 4,
            top: 2,
            select: Some("id,mail".into()),
            filter: Some("startswith(displayName,'A')".into()),
        };
        assert_eq!(PageToken::decode(&page.encode()).unwrap(), page);
        for garbage in ["", "%%%", "eyJ4IjoxfQ"] {
            assert_eq!(
                PageToken::decode(garbage).unwrap_err().code,
                "Directory_ExpiredPageToken"
            );
        }
    }

    #[test]
    fn select_takes_known_names_in_their_canonical_spelling() {
        assert_eq!(
            parse_select("DisplayName,id,displayname").unwrap(),
            vec!["displayName", "id"]
        );
        assert_eq!(parse_select("nope").unwrap_err().code, "Request_BadRequest");
    }
}
