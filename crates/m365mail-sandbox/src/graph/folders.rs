//! `GET /v1.0/users/{id}/mailFolders`, `…/mailFolders/{folder}` and `…/mailFolders/{folder}/childFolders`
//! (and under `/me`), served from the store IMAP and POP3 use.
//!
//! A folder is the store's IMAP folder: `INBOX` shows as `Inbox`, a nested folder (IMAP `Parent/Child`) is
//! a child of the longest name before a `/` that is itself a folder (else it sits at the top with its full
//! name). Folder JSON, Graph's shape: `id`, `displayName`, `parentFolderId`, `childFolderCount`,
//! `unreadItemCount` (messages without `\Seen`), `totalItemCount`, `sizeInBytes`, `isHidden` (`false`).
//!
//! **Folder references.** Wherever Graph takes a folder id it takes a well-known name (microsoft.md §8.5,
//! matched without case): `inbox`, `sentitems`, `drafts`, `deleteditems`, `archive`, `junkemail`, and
//! `msgfolderroot` — the mailbox's root ("Top of Information Store"), parent of the top-level folders
//! (`GET mailFolders` lists its children). Other well-known names Graph knows (`outbox`,
//! `recoverableitemsdeletions`, …) are not modelled.
//!
//! **Query options** (lists): `$top` (1..=1000, default 10, Graph's), `$skip`, `$select` (the properties
//! above; `id` always). A longer list ends its page with `@odata.nextLink`: the same URL with
//! `$skip` advanced (as Graph's mail lists page). Other `$` options: 400 `Request_UnsupportedQuery` (not
//! modelled).
//!
//! | Status | `code` | When |
//! |---|---|---|
//! | 400 | `ErrorInvalidIdMalformed` | a folder reference that is neither a well-known name nor one of the sandbox's ids ("Id is malformed.", Exchange's text) |
//! | 404 | `ErrorItemNotFound` | a well-formed folder id naming no folder of the mailbox (deleted, another mailbox's) ("The specified object was not found in the store.") |
//! | 400 | `RequestBroker--ParseUri` | `$select` naming no folder property (Graph's code for a URL it cannot parse) |
//! | 400 | `Request_BadRequest` | a bad `$top` or `$skip` |

use serde_json::{Map, Value, json};

use super::{
    GraphError, METADATA, graph_json,
    ids::{self, ROOT_FOLDER_KEY},
    mail::MailRequest,
    users::{option, query_pairs},
};
use crate::{
    exchange::store::{Folder, MailStore},
    sync::lock,
};

/// Graph's well-known folder names and the store's folder each one is.
const WELL_KNOWN: [(&str, &str); 6] = [
    ("inbox", "INBOX"),
    ("sentitems", "Sent Items"),
    ("drafts", "Drafts"),
    ("deleteditems", "Deleted Items"),
    ("archive", "Archive"),
    ("junkemail", "Junk Email"),
];

/// The root's well-known name.
const ROOT: &str = "msgfolderroot";

/// The properties of a folder, in Graph's order.
const FOLDER_PROPERTIES: [&str; 8] = [
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "sizeInBytes",
    "isHidden",
];

pub(crate) const DEFAULT_TOP: usize = 10;
pub(crate) const MAX_TOP: usize = 1000;

/// 400 `ErrorInvalidIdMalformed`.
pub(crate) fn malformed_id() -> GraphError {
    GraphError::bad_request("ErrorInvalidIdMalformed", "Id is malformed.")
}

/// 404 `ErrorItemNotFound`: a folder or message the mailbox does not hold.
pub(crate) fn item_not_found() -> GraphError {
    GraphError::new(
        axum::http::StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// What a folder reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FolderRef<'s> {
    Root,
    Folder(&'s Folder),
}

/// The folder `reference` (an id or a well-known name) names in `address`'s mailbox.
pub(crate) fn resolve<'s>(
    store: &'s MailStore,
    address: &str,
    reference: &str,
) -> Result<FolderRef<'s>, GraphError> {
    if reference.eq_ignore_ascii_case(ROOT) {
        return Ok(FolderRef::Root);
    }
    if let Some((_, name)) = WELL_KNOWN
        .iter()
        .find(|(well_known, _)| well_known.eq_ignore_ascii_case(reference))
    {
        return store
            .folder(address, name)
            .map(FolderRef::Folder)
            .ok_or_else(item_not_found);
    }
    match ids::parse_folder_id(reference).ok_or_else(malformed_id)? {
        ROOT_FOLDER_KEY => Ok(FolderRef::Root),
        key => store
            .folder_by_key(address, key)
            .map(FolderRef::Folder)
            .ok_or_else(item_not_found),
    }
}

/// A folder (not the root) `reference` names; the root is no place for messages.
pub(crate) fn resolve_folder<'s>(
    store: &'s MailStore,
    address: &str,
    reference: &str,
) -> Result<&'s Folder, GraphError> {
    match resolve(store, address, reference)? {
        FolderRef::Folder(folder) => Ok(folder),
        FolderRef::Root => Err(GraphError::bad_request(
            "ErrorInvalidIdMalformed",
            "The mailbox root (msgfolderroot) holds no messages.",
        )),
    }
}

/// The folder `folder` is a child of: the longest `/`-prefix of its name that is a folder, else none
/// (the root).
pub(crate) fn parent_of<'f>(folders: &'f [Folder], folder: &Folder) -> Option<&'f Folder> {
    let mut name = folder.name.as_str();
    while let Some((prefix, _)) = name.rsplit_once('/') {
        if let Some(parent) = folders.iter().find(|f| f.name == prefix) {
            return Some(parent);
        }
        name = prefix;
    }
    None
}

/// The key of the folder `folder` is a child of.
fn parent_key(folders: &[Folder], folder: &Folder) -> u64 {
    parent_of(folders, folder).map_or(ROOT_FOLDER_KEY, |parent| parent.key)
}

/// The name Graph shows.
pub(crate) fn display_name(folders: &[Folder], folder: &Folder) -> String {
    if folder.name.eq_ignore_ascii_case("INBOX") {
        return "Inbox".to_owned();
    }
    match parent_of(folders, folder) {
        Some(parent) => folder.name[parent.name.len() + 1..].to_owned(),
        None => folder.name.clone(),
    }
}

/// One folder's JSON (every property).
fn folder_json(folders: &[Folder], folder: &Folder) -> Map<String, Value> {
    let children = folders
        .iter()
        .filter(|f| f.key != folder.key && parent_key(folders, f) == folder.key)
        .count();
    let unread = folder
        .messages
        .iter()
        .filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
        .count();
    let size: usize = folder.messages.iter().map(|m| m.bytes.len()).sum();
    let mut object = Map::new();
    object.insert("id".into(), json!(ids::folder_id(folder.key)));
    object.insert("displayName".into(), json!(display_name(folders, folder)));
    object.insert(
        "parentFolderId".into(),
        json!(ids::folder_id(parent_key(folders, folder))),
    );
    object.insert("childFolderCount".into(), json!(children));
    object.insert("unreadItemCount".into(), json!(unread));
    object.insert("totalItemCount".into(), json!(folder.messages.len()));
    object.insert("sizeInBytes".into(), json!(size));
    object.insert("isHidden".into(), json!(false));
    object
}

/// The root's JSON.
fn root_json(folders: &[Folder]) -> Map<String, Value> {
    let children = folders
        .iter()
        .filter(|f| parent_key(folders, f) == ROOT_FOLDER_KEY)
        .count();
    let mut object = Map::new();
    object.insert("id".into(), json!(ids::folder_id(ROOT_FOLDER_KEY)));
    object.insert("displayName".into(), json!("Top of Information Store"));
    object.insert("parentFolderId".into(), Value::Null);
    object.insert("childFolderCount".into(), json!(children));
    object.insert("unreadItemCount".into(), json!(0));
    object.insert("totalItemCount".into(), json!(0));
    object.insert("sizeInBytes".into(), json!(0));
    object.insert("isHidden".into(), json!(false));
    object
}

/// A parsed `$select` of folder properties (canonical names; `None`: all).
fn parse_select(raw: Option<&str>) -> Result<Option<Vec<&'static str>>, GraphError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut selected = vec!["id"];
    for item in raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let canonical = FOLDER_PROPERTIES
            .iter()
            .find(|known| known.eq_ignore_ascii_case(item))
            .ok_or_else(|| {
                GraphError::bad_request(
                    "RequestBroker--ParseUri",
                    format!("Could not find a property named '{item}' on type 'microsoft.graph.mailFolder'."),
                )
            })?;
        if !selected.contains(canonical) {
            selected.push(canonical);
        }
    }
    Ok(Some(selected))
}

fn selected(mut object: Map<String, Value>, select: Option<&[&'static str]>) -> Value {
    if let Some(names) = select {
        object.retain(|key, _| names.contains(&key.as_str()));
    }
    Value::Object(object)
}

/// `$top` and `$skip` of a list (`max_top` its largest `$top`).
pub(crate) fn paging(
    pairs: &[(String, String)],
    default_top: usize,
    max_top: usize,
) -> Result<(usize, usize), GraphError> {
    let top = match option(pairs, "$top") {
        None => default_top,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|top| (1..=max_top).contains(top))
            .ok_or_else(|| {
                GraphError::bad_request(
                    "Request_BadRequest",
                    format!(
                        "Invalid page size specified: '{raw}'. Must be between 1 and {max_top} inclusive."
                    ),
                )
            })?,
    };
    let skip = match option(pairs, "$skip") {
        None => 0,
        Some(raw) => raw.trim().parse::<usize>().map_err(|_| {
            GraphError::bad_request(
                "Request_BadRequest",
                format!("Invalid value '{raw}' for the query option '$skip'."),
            )
        })?,
    };
    Ok((top, skip))
}

/// 400 for a `$` option a route does not model.
pub(crate) fn refuse_other_options(
    pairs: &[(String, String)],
    modelled: &[&str],
    what: &str,
) -> Result<(), GraphError> {
    for (name, _) in pairs.iter().filter(|(name, _)| name.starts_with('$')) {
        if !modelled
            .iter()
            .any(|known| known.eq_ignore_ascii_case(name))
        {
            return Err(GraphError::unsupported_query(format!(
                "The sandbox does not model the query option '{name}' on {what}. It models {}.",
                modelled.join(", ")
            )));
        }
    }
    Ok(())
}

/// The link to the next page: this request's URL with `$skip` set to `next_skip`.
pub(crate) fn next_link(
    request: &MailRequest<'_>,
    pairs: &[(String, String)],
    next_skip: usize,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("$skip"))
    {
        query.append_pair(name, value);
    }
    query.append_pair("$skip", &next_skip.to_string());
    format!(
        "{}{}?{}",
        request.base(),
        request.uri.path(),
        query.finish()
    )
}

/// `@odata.context` of the mailbox's folders.
fn context_prefix(request: &MailRequest<'_>) -> String {
    format!("{METADATA}#users('{}')", request.mailbox.address)
}

/// `GET mailFolders` (`parent` `None`) or `GET mailFolders/{parent}/childFolders`.
pub(crate) fn list(
    request: &MailRequest<'_>,
    parent: Option<&str>,
) -> Result<axum::response::Response, GraphError> {
    let pairs = query_pairs(request.uri)?;
    refuse_other_options(&pairs, &["$top", "$skip", "$select"], "mail folders")?;
    let (top, skip) = paging(&pairs, DEFAULT_TOP, MAX_TOP)?;
    let select = parse_select(option(&pairs, "$select"))?;
    let address = &request.mailbox.address;
    let mut store = lock(&request.exchange.store);
    store.folders(address);
    let parent_key_wanted = match parent {
        None => ROOT_FOLDER_KEY,
        Some(reference) => match resolve(&store, address, reference)? {
            FolderRef::Root => ROOT_FOLDER_KEY,
            FolderRef::Folder(folder) => folder.key,
        },
    };
    let folders = store.folder_list(address);
    let children: Vec<&Folder> = folders
        .iter()
        .filter(|f| f.key != parent_key_wanted && parent_key(folders, f) == parent_key_wanted)
        .collect();
    let value: Vec<Value> = children
        .iter()
        .skip(skip)
        .take(top)
        .map(|folder| selected(folder_json(folders, folder), select.as_deref()))
        .collect();
    let mut body = Map::new();
    let context = match parent {
        None => format!("{}/mailFolders", context_prefix(request)),
        Some(_) => format!(
            "{}/mailFolders('{}')/childFolders",
            context_prefix(request),
            ids::folder_id(parent_key_wanted)
        ),
    };
    body.insert("@odata.context".into(), json!(context));
    body.insert("value".into(), Value::Array(value));
    let next_skip = skip.saturating_add(top);
    if next_skip < children.len() {
        body.insert(
            "@odata.nextLink".into(),
            json!(next_link(request, &pairs, next_skip)),
        );
    }
    Ok(graph_json(Value::Object(body)))
}

/// `GET mailFolders/{folder}`.
pub(crate) fn one(
    request: &MailRequest<'_>,
    reference: &str,
) -> Result<axum::response::Response, GraphError> {
    let pairs = query_pairs(request.uri)?;
    refuse_other_options(&pairs, &["$select"], "a mail folder")?;
    let select = parse_select(option(&pairs, "$select"))?;
    let address = &request.mailbox.address;
    let mut store = lock(&request.exchange.store);
    store.folders(address);
    let object = match resolve(&store, address, reference)? {
        FolderRef::Root => root_json(store.folder_list(address)),
        FolderRef::Folder(folder) => folder_json(store.folder_list(address), folder),
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/mailFolders/$entity", context_prefix(request))),
    );
    if let Value::Object(object) = selected(object, select.as_deref()) {
        body.extend(object);
    }
    Ok(graph_json(Value::Object(body)))
}
