//! `GET /v1.0/users/{id}/mailFolders/{folder}/messages/delta` (and under `/me`): the messages that
//! appeared in a folder, in rounds (microsoft.md §8.5).
//!
//! Microsoft's documented shape: each page is `{"@odata.context", "value": […], "@odata.nextLink"}` —
//! keep paging — or, on a round's last page, `"@odata.deltaLink"` instead — the round is complete; store
//! the whole link and call it for the next round. Query options go on the first request only; the links
//! carry them. `Prefer: odata.maxpagesize=N` sets the page size (answered `Preference-Applied:
//! odata.maxpagesize=N`).
//!
//! The sandbox's model: a folder's IMAP UIDs ascend and are never reused under one UIDVALIDITY, so a
//! round is "the folder's messages with a UID from the previous round's end up to the UIDNEXT when this
//! round began", in ascending UID order; the first round starts at UID 1. A message delivered, appended,
//! copied or moved into the folder after a round began gets a UID at or above that round's end, so the
//! next round reports it; one that leaves before its page is served is not reported. Links are absolute on
//! the URL the client used, the path it used (`…/messages/delta`) with one opaque token:
//!
//! - `@odata.nextLink`: `https://host:port/v1.0/users/{id}/mailFolders/{folder}/messages/delta?$skiptoken=…`
//! - `@odata.deltaLink`: `https://host:port/v1.0/users/{id}/mailFolders/{folder}/messages/delta?$deltatoken=…`
//!
//! A token holds the folder, its UIDVALIDITY, the round's bounds, the page size, `$select` and `$filter`,
//! sealed with this run's key ([`super::ids::TokenSigner`]); nothing is kept on the server, so tokens never
//! expire within a run. With a token the request's other query options are not looked at.
//!
//! Options of the first request: `changeType=created` (the default reports the same: the sandbox keeps no
//! change log, so flag changes and removals are never reported), `$select` (as for messages),
//! `$filter=receivedDateTime ge|gt <date>` (Graph's only delta filter; `and` of several allowed).
//!
//! | Status | `code` | When |
//! |---|---|---|
//! | 410 | `syncStateNotFound` | a token this sandbox run did not issue (another run's, altered, garbage), a token of another folder, of a folder deleted or whose UIDVALIDITY changed, a `$deltatoken` given as `$skiptoken` or back, or an injected [`super::GraphFault::SyncStateNotFound`] ("The sync state generation is not found. Start a new sync without a token.": the client must start again without a token) |
//! | 400 | `Request_UnsupportedQuery` | `changeType=updated|deleted` (not modelled: no change log), another `$filter`, `$orderby`, `$top`, `$expand`, `$search` or another option |
//! | 400 | `ErrorInvalidIdMalformed`, 404 `ErrorItemNotFound` | the folder (see [`super::folders`]) |

use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    GraphError, GraphFault, METADATA,
    folders::{self, refuse_other_options},
    graph_json,
    mail::MailRequest,
    messages::{self, Clause, Comparison, Row, message_json, passes_cheap},
    users::{option, query_pairs},
};
use crate::sync::lock;

/// The page size without `Prefer: odata.maxpagesize` (the sandbox's choice).
const DEFAULT_PAGE_SIZE: usize = 10;

/// The largest page the sandbox serves.
const MAX_PAGE_SIZE: usize = 1000;

/// What a token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SyncState {
    /// `s` in a `$skiptoken` (a round under way), `d` in a `$deltatoken` (a round to begin).
    #[serde(rename = "t")]
    kind: char,
    #[serde(rename = "f")]
    folder_key: u64,
    #[serde(rename = "v")]
    uid_validity: u32,
    /// The first UID this round (or the next) reports.
    #[serde(rename = "a")]
    from_uid: u32,
    /// The round's end: it reports UIDs below it (a `$skiptoken` only).
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    until_uid: Option<u32>,
    #[serde(rename = "p")]
    page_size: usize,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    select: Option<String>,
    #[serde(rename = "q", default, skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
}

const SKIP: char = 's';
const DELTA: char = 'd';

/// The first request's options, checked.
fn first_request(
    pairs: &[(String, String)],
) -> Result<(Option<String>, Option<String>), GraphError> {
    refuse_other_options(pairs, &["$select", "$filter"], "message delta")?;
    if let Some(change_type) = option(pairs, "changeType")
        && !change_type.trim().eq_ignore_ascii_case("created")
    {
        return Err(GraphError::unsupported_query(format!(
            "The sandbox does not model changeType '{change_type}': it keeps no change log and reports created messages only."
        )));
    }
    let select = option(pairs, "$select").map(str::to_owned);
    messages::parse_select(select.as_deref())?;
    let filter = option(pairs, "$filter").map(str::to_owned);
    if let Some(raw) = &filter {
        check_delta_filter(raw)?;
    }
    Ok((select, filter))
}

/// Graph's delta takes `receivedDateTime ge|gt` only.
fn check_delta_filter(raw: &str) -> Result<Vec<Clause>, GraphError> {
    let clauses = messages::parse_filter(raw)?;
    let supported = clauses
        .iter()
        .all(|clause| matches!(clause, Clause::Received(Comparison::Ge | Comparison::Gt, _)));
    if supported {
        Ok(clauses)
    } else {
        Err(GraphError::unsupported_query(format!(
            "The filter '{raw}' is not supported on delta: it takes receivedDateTime ge|gt only."
        )))
    }
}

/// `GET mailFolders/{folder}/messages/delta`.
pub(crate) fn delta(
    request: &MailRequest<'_>,
    folder_reference: &str,
) -> Result<(Response, Vec<String>), GraphError> {
    let pairs = query_pairs(request.uri)?;
    let skip_token = option(&pairs, "$skiptoken");
    let delta_token = option(&pairs, "$deltatoken");
    let token = match (skip_token, delta_token) {
        (Some(token), None) => Some((SKIP, token)),
        (None, Some(token)) => Some((DELTA, token)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(GraphError::sync_state_not_found()),
    };
    let requested_page_size = request
        .preferences
        .max_page_size
        .map(|size| size.min(MAX_PAGE_SIZE));
    let address = &request.mailbox.address;
    let mut store = lock(&request.exchange.store);
    store.folders(address);
    let folder = folders::resolve_folder(&store, address, folder_reference)?;
    let state = match token {
        None => {
            let (select, filter) = first_request(&pairs)?;
            SyncState {
                kind: SKIP,
                folder_key: folder.key,
                uid_validity: folder.uid_validity,
                from_uid: 1,
                until_uid: Some(folder.uid_next),
                page_size: requested_page_size.unwrap_or(DEFAULT_PAGE_SIZE),
                select,
                filter,
            }
        }
        Some((kind, token)) => {
            if request
                .state
                .graph_faults
                .take(|fault| matches!(fault, GraphFault::SyncStateNotFound))
                .is_some()
            {
                return Err(GraphError::sync_state_not_found());
            }
            let state = request
                .mail
                .tokens
                .open(token)
                .and_then(|payload| serde_json::from_slice::<SyncState>(&payload).ok())
                .filter(|state| {
                    state.kind == kind
                        && state.folder_key == folder.key
                        && state.uid_validity == folder.uid_validity
                        && (1..=MAX_PAGE_SIZE).contains(&state.page_size)
                })
                .ok_or_else(GraphError::sync_state_not_found)?;
            let page_size = requested_page_size.unwrap_or(state.page_size);
            if kind == DELTA {
                // A new round: up to the folder's UIDNEXT now.
                SyncState {
                    kind: SKIP,
                    until_uid: Some(folder.uid_next),
                    page_size,
                    ..state
                }
            } else {
                SyncState { page_size, ..state }
            }
        }
    };
    let until = state.until_uid.unwrap_or(folder.uid_next);
    let properties = messages::parse_select(state.select.as_deref())?;
    let clauses = state
        .filter
        .as_deref()
        .map(check_delta_filter)
        .transpose()?
        .unwrap_or_default();
    let position = store
        .folder_list(address)
        .iter()
        .position(|f| f.key == folder.key)
        .unwrap_or(0);
    // UIDs ascend in the store's folder: the round's messages in order.
    let mut round = folder
        .messages
        .iter()
        .filter(|m| m.imap_uid >= state.from_uid && m.imap_uid < until)
        .map(|m| Row::new(folder, position, m))
        .filter(|row| passes_cheap(row, &clauses));
    let page: Vec<Row> = round.by_ref().take(state.page_size).collect();
    let more = round.next().is_some();
    drop(store);

    let immutable = request.preferences.immutable_ids;
    let value: Vec<Value> = page
        .iter()
        .map(|row| Value::Object(message_json(row, immutable, &properties)))
        .collect();
    let link_base = format!("{}{}", request.base(), request.uri.path());
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{METADATA}#Collection(message)")),
    );
    body.insert("value".into(), Value::Array(value));
    if more {
        let next = SyncState {
            from_uid: page.last().map_or(state.from_uid, |row| row.imap_uid + 1),
            until_uid: Some(until),
            ..state
        };
        body.insert(
            "@odata.nextLink".into(),
            json!(format!("{link_base}?$skiptoken={}", seal(request, &next))),
        );
    } else {
        let next = SyncState {
            kind: DELTA,
            from_uid: until,
            until_uid: None,
            ..state
        };
        body.insert(
            "@odata.deltaLink".into(),
            json!(format!("{link_base}?$deltatoken={}", seal(request, &next))),
        );
    }
    let applied = requested_page_size
        .map(|size| vec![format!("odata.maxpagesize={size}")])
        .unwrap_or_default();
    Ok((graph_json(Value::Object(body)), applied))
}

fn seal(request: &MailRequest<'_>, state: &SyncState) -> String {
    request
        .mail
        .tokens
        .seal(&serde_json::to_vec(state).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_takes_receive_date_lower_bounds_only() {
        assert!(check_delta_filter("receivedDateTime ge 2026-12-07T10:00:00Z").is_ok());
        assert!(check_delta_filter("receivedDateTime gt 2026-12-07").is_ok());
        for unsupported in [
            "receivedDateTime lt 2026-12-07",
            "isRead eq false",
            "hasAttachments eq true",
        ] {
            assert_eq!(
                check_delta_filter(unsupported).unwrap_err().code,
                "Request_UnsupportedQuery",
                "{unsupported}"
            );
        }
    }

    #[test]
    fn first_requests_refuse_what_is_not_modelled() {
        let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
            items
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(
            first_request(&pairs(&[("changeType", "created"), ("$select", "subject")])).is_ok()
        );
        for refused in [
            pairs(&[("changeType", "updated")]),
            pairs(&[("changeType", "deleted")]),
            pairs(&[("$orderby", "receivedDateTime desc")]),
            pairs(&[("$top", "5")]),
        ] {
            assert_eq!(
                first_request(&refused).unwrap_err().code,
                "Request_UnsupportedQuery",
                "{refused:?}"
            );
        }
    }
}
