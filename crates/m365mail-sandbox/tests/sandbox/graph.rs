//! Microsoft Graph's first slice: `/v1.0/users` (paging, `$select`, `$filter`), `/v1.0/users/{id | upn}`,
//! `/v1.0/me`, Graph's error JSON and ids, permission checks and the injectable throttle.

use std::{collections::BTreeSet, time::Duration};

use m365mail_sandbox::{GraphFault, Lifetimes, demo, tenant::MICROSOFT_GRAPH_APP_ID};
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::{Value, json};

use crate::common::{TestSandbox, run_ok, start, start_with_fake_clock};

const GRAPH_USER_READ: &str = "https://graph.microsoft.com/User.Read";
const GRAPH_READ_BASIC: &str = "https://graph.microsoft.com/User.ReadBasic.All";

/// A Graph answer: status, headers and JSON body.
#[derive(Debug)]
pub(crate) struct GraphAnswer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl GraphAnswer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    #[track_caller]
    pub(crate) fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        &self.body
    }

    /// Asserts Graph's error shape (code, message, innerError with a GUID request id, the client request
    /// id and a date) and the `request-id` / `client-request-id` headers; returns the message.
    #[track_caller]
    pub(crate) fn error(&self, status: u16, code: &str) -> &str {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.body);
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "body: {}", self.body);
        let inner = &error["innerError"];
        let request_id = inner["request-id"].as_str().expect("request-id");
        assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{request_id}");
        assert_eq!(self.header("request-id"), Some(request_id));
        assert_eq!(
            self.header("client-request-id"),
            inner["client-request-id"].as_str()
        );
        let date = inner["date"].as_str().expect("date");
        assert!(
            chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S").is_ok(),
            "ISO 8601 date: {date}"
        );
        assert_eq!(
            self.body.as_object().unwrap().len(),
            1,
            "only `error`: {}",
            self.body
        );
        let keys: BTreeSet<&str> = error
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["code", "message", "innerError"]));
        error["message"].as_str().expect("message")
    }
}

async fn graph_get_with(
    sandbox: &TestSandbox,
    url: &str,
    token: Option<&str>,
    client_request_id: Option<&str>,
) -> GraphAnswer {
    let url = if url.starts_with("https://") {
        url.to_owned()
    } else {
        sandbox.url(url)
    };
    let mut request = sandbox.http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = client_request_id {
        request = request.header("client-request-id", id);
    }
    let response = request.send().await.expect("Graph answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    GraphAnswer {
        status,
        headers,
        body,
    }
}

async fn graph_get(sandbox: &TestSandbox, url: &str, token: &str) -> GraphAnswer {
    graph_get_with(sandbox, url, Some(token), None).await
}

/// The daemon's app-only Graph token (User.Read.All).
pub(crate) async fn daemon_token(sandbox: &TestSandbox) -> String {
    sandbox.app_token(demo::GRAPH_APP_SCOPE).await
}

/// A delegated Graph token of the demo user through the public app.
pub(crate) async fn user_token(sandbox: &TestSandbox, scope: &str) -> String {
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, scope)
        .await
        .assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every user of the demo tenant, in the directory's order.
fn demo_users(sandbox: &TestSandbox) -> Vec<m365mail_sandbox::tenant::User> {
    sandbox.sandbox.admin().tenant_model().tenants[0]
        .users
        .clone()
}

/// The ids of a page's users.
fn ids(page: &Value) -> Vec<String> {
    page["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|user| user["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Follows `@odata.nextLink` from `first` to the end: every page's body.
async fn all_pages(sandbox: &TestSandbox, first: &str, token: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(url) = next {
        assert!(pages.len() < 20, "paging does not end");
        let page = graph_get(sandbox, &url, token).await.ok().clone();
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
        pages.push(page);
    }
    pages
}

#[tokio::test]
async fn paging_with_top_visits_every_user_once_and_ends() {
    let sandbox = start().await;
    let token = daemon_token(&sandbox).await;
    let expected: Vec<String> = demo_users(&sandbox)
        .iter()
        .map(|user| user.object_id.clone())
        .collect();
    assert_eq!(expected.len(), 7);

    let pages = all_pages(&sandbox, "v1.0/users?$top=2", &token).await;
    assert_eq!(pages.len(), 4, "7 users, 2 a page");
    let mut seen = Vec::new();
    for (index, page) in pages.iter().enumerate() {
        assert_eq!(
            page["@odata.context"],
            "https://graph.microsoft.com/v1.0/$metadata#users"
        );
        assert!(ids(page).len() <= 2);
        seen.extend(ids(page));
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(index < 3);
                // Absolute, on the host the client used, with an opaque skiptoken.
                let prefix = format!("{}v1.0/users?$skiptoken=", sandbox.sandbox.base_url());
                assert!(next.starts_with(&prefix), "{next}");
            }
            None => assert_eq!(index, 3, "only the last page has no nextLink"),
        }
    }
    assert_eq!(seen, expected, "each user once, in the directory's order");

    // The nextLink names the host the client used.
    let port = sandbox.sandbox.base_url().port().unwrap();
    let via_localhost = graph_get(
        &sandbox,
        &format!("https://localhost:{port}/v1.0/users?$top=5"),
        &token,
    )
    .await;
    let next = via_localhost.ok()["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("https://localhost:{port}/v1.0/users?$skiptoken=")),
        "{next}"
    );
    let last = graph_get(&sandbox, next, &token).await;
    assert_eq!(ids(last.ok()), expected[5..]);

    // Without $top: the default page size (100) holds them all.
    let all = graph_get(&sandbox, "v1.0/users", &token).await;
    let body = all.ok();
    assert!(body.get("@odata.nextLink").is_none());
    assert_eq!(ids(body), expected);
    // Graph's default properties, null where the model has nothing; mail from the user's mailbox.
    let adele = &body["value"][0];
    assert_eq!(
        adele,
        &json!({
            "businessPhones": [],
            "displayName": demo::USER_DISPLAY_NAME,
            "givenName": null,
            "id": demo::USER_OBJECT_ID,
            "jobTitle": null,
            "mail": demo::USER_UPN,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": null,
            "surname": null,
            "userPrincipalName": demo::USER_UPN,
        })
    );
    let diego = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["userPrincipalName"] == demo::DISABLED_USER_UPN)
        .expect("disabled users are listed");
    assert_eq!(diego["mail"], Value::Null, "no mailbox, no mail");
    assert!(
        all.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn select_limits_the_properties_on_every_page() {
    let sandbox = start().await;
    let token = daemon_token(&sandbox).await;
    let answer = graph_get(&sandbox, "v1.0/users?$select=displayName,MAIL", &token).await;
    let body = answer.ok();
    assert_eq!(
        body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users(displayName,mail)"
    );
    for user in body["value"].as_array().unwrap() {
        let keys: BTreeSet<&str> = user
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["displayName", "mail"]), "{user}");
    }

    // The selection travels in the nextLink.
    let pages = all_pages(
        &sandbox,
        "v1.0/users?$top=3&$select=id,accountEnabled",
        &token,
    )
    .await;
    assert_eq!(pages.len(), 3);
    let mut enabled = Vec::new();
    for page in &pages {
        for user in page["value"].as_array().unwrap() {
            assert_eq!(user.as_object().unwrap().len(), 2, "{user}");
            enabled.push(user["accountEnabled"].as_bool().unwrap());
        }
    }
    assert_eq!(enabled.iter().filter(|enabled| !**enabled).count(), 1);

    let unknown = graph_get(&sandbox, "v1.0/users?$select=id,shoeSize", &token).await;
    assert_eq!(
        unknown.error(400, "Request_BadRequest"),
        "Could not find a property named 'shoeSize' on type 'microsoft.graph.user'."
    );
}

/// `$filter` in the query, URL-encoded.
fn filtered(filter: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![("$filter", filter)];
    params.extend_from_slice(extra);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("v1.0/users?{query}")
}

fn upns(page: &Value) -> Vec<&str> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["userPrincipalName"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn each_filter_form_selects_its_users() {
    let sandbox = start().await;
    let token = daemon_token(&sandbox).await;
    let run = |filter: &'static str| {
        let sandbox = &sandbox;
        let token = &token;
        async move { graph_get(sandbox, &filtered(filter, &[]), token).await }
    };
    let a_names = run("startswith(displayName,'a')").await;
    assert_eq!(
        upns(a_names.ok()),
        [demo::USER_UPN, demo::SECOND_USER_UPN],
        "case-insensitive prefix"
    );
    let me_upn = run("startswith(userPrincipalName, 'MEG')").await;
    assert_eq!(upns(me_upn.ok()), [demo::MFA_USER_UPN]);
    let alex = run("userPrincipalName eq 'ALEX@contoso.onmicrosoft.com'").await;
    assert_eq!(upns(alex.ok()), [demo::SECOND_USER_UPN]);
    let by_mail = run("mail eq 'adele@contoso.onmicrosoft.com'").await;
    assert_eq!(upns(by_mail.ok()), [demo::USER_UPN]);
    let disabled = run("accountEnabled eq false").await;
    assert_eq!(upns(disabled.ok()), [demo::DISABLED_USER_UPN]);
    let enabled = run("accountEnabled eq true").await;
    assert_eq!(upns(enabled.ok()).len(), 6);
    let nobody = run("mail eq 'nobody@contoso.onmicrosoft.com'").await;
    assert_eq!(nobody.ok()["value"], json!([]));

    // The filter travels in the nextLink too.
    let pages = all_pages(
        &sandbox,
        &filtered("startswith(displayName,'A')", &[("$top", "1")]),
        &token,
    )
    .await;
    let visited: Vec<&str> = pages.iter().flat_map(upns).collect();
    assert_eq!(visited, [demo::USER_UPN, demo::SECOND_USER_UPN]);

    // What the sandbox does not model, and what Graph refuses.
    for unsupported in [
        "endswith(mail,'contoso.onmicrosoft.com')",
        "jobTitle eq 'Boss'",
        "displayName ne 'x'",
        "mail eq 'a' or mail eq 'b'",
    ] {
        let answer = run(unsupported).await;
        answer.error(400, "Request_UnsupportedQuery");
    }
    let orderby = graph_get(&sandbox, "v1.0/users?$orderby=displayName", &token).await;
    orderby.error(400, "Request_UnsupportedQuery");
    let skip = graph_get(&sandbox, "v1.0/users?$skip=2", &token).await;
    assert_eq!(
        skip.error(400, "Request_BadRequest"),
        "'$skip' is not supported by the service."
    );
    for top in ["0", "1000", "two"] {
        let answer = graph_get(&sandbox, &format!("v1.0/users?$top={top}"), &token).await;
        answer.error(400, "Request_BadRequest");
    }
    let twice = graph_get(&sandbox, "v1.0/users?$top=1&$top=2", &token).await;
    twice.error(400, "Request_BadRequest");
    let forged = graph_get(&sandbox, "v1.0/users?$skiptoken=not-ours", &token).await;
    forged.error(400, "Directory_ExpiredPageToken");
}

#[tokio::test]
async fn one_user_by_id_or_upn_and_graphs_404() {
    let sandbox = start().await;
    let token = daemon_token(&sandbox).await;
    let by_id = graph_get(
        &sandbox,
        &format!("v1.0/users/{}", demo::SECOND_USER_OBJECT_ID),
        &token,
    )
    .await;
    let body = by_id.ok();
    assert_eq!(
        body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
    );
    assert_eq!(body["userPrincipalName"], demo::SECOND_USER_UPN);
    assert_eq!(body["displayName"], "Alex Wilber");
    assert_eq!(body.as_object().unwrap().len(), 12, "context + 11 defaults");

    let by_upn = graph_get(
        &sandbox,
        "v1.0/users/Adele%40contoso.onmicrosoft.com?$select=id,displayName",
        &token,
    )
    .await;
    assert_eq!(
        by_upn.ok(),
        &json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,displayName)/$entity",
            "id": demo::USER_OBJECT_ID,
            "displayName": demo::USER_DISPLAY_NAME,
        })
    );

    let missing = graph_get(&sandbox, "v1.0/users/ghost@contoso.onmicrosoft.com", &token).await;
    assert_eq!(
        missing.error(404, "Request_ResourceNotFound"),
        "Resource 'ghost@contoso.onmicrosoft.com' does not exist or one of its queried reference-property objects are not present."
    );

    // What the sandbox does not serve.
    let messages = graph_get(
        &sandbox,
        &format!("v1.0/users/{}/calendars", demo::USER_OBJECT_ID),
        &token,
    )
    .await;
    assert_eq!(
        messages.error(400, "BadRequest"),
        "Resource not found for the segment 'calendars'."
    );
    let post = sandbox
        .http
        .post(sandbox.url("v1.0/users"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(post.headers().contains_key("request-id"));
    let body: Value = post.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Request_BadRequest");
}

#[tokio::test]
async fn me_needs_a_delegated_token() {
    let sandbox = start().await;
    let user_read = user_token(&sandbox, GRAPH_USER_READ).await;
    let me = graph_get(&sandbox, "v1.0/me", &user_read).await;
    let body = me.ok();
    assert_eq!(
        body["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
    );
    assert_eq!(body["id"], demo::USER_OBJECT_ID);
    assert_eq!(body["userPrincipalName"], demo::USER_UPN);
    assert_eq!(body["mail"], demo::USER_UPN);
    let selected = graph_get(&sandbox, "v1.0/me?$select=mail", &user_read).await;
    assert_eq!(
        selected.ok(),
        &json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(mail)/$entity",
            "mail": demo::USER_UPN,
        })
    );

    let app_only = graph_get(&sandbox, "v1.0/me", &daemon_token(&sandbox).await).await;
    assert_eq!(
        app_only.error(400, "BadRequest"),
        "/me request is only valid with delegated authentication flow."
    );
}

#[tokio::test]
async fn delegated_tokens_need_a_user_reading_scope() {
    let sandbox = start().await;
    // User.Read alone: the own profile, not the directory.
    let user_read = user_token(&sandbox, GRAPH_USER_READ).await;
    let listed = graph_get(&sandbox, "v1.0/users", &user_read).await;
    assert_eq!(
        listed.error(403, "Authorization_RequestDenied"),
        "Insufficient privileges to complete the operation."
    );
    let own = graph_get(
        &sandbox,
        &format!("v1.0/users/{}", demo::USER_OBJECT_ID),
        &user_read,
    )
    .await;
    assert_eq!(own.ok()["userPrincipalName"], demo::USER_UPN);
    let other = graph_get(
        &sandbox,
        &format!("v1.0/users/{}", demo::SECOND_USER_OBJECT_ID),
        &user_read,
    )
    .await;
    other.error(403, "Authorization_RequestDenied");

    // User.ReadBasic.All (consented to the public app): the directory, and /me.
    let read_basic = user_token(&sandbox, GRAPH_READ_BASIC).await;
    let claims = crate::common::claims(&read_basic);
    assert_eq!(claims["scp"], "User.ReadBasic.All");
    assert_eq!(
        ids(graph_get(&sandbox, "v1.0/users", &read_basic).await.ok()).len(),
        7
    );
    graph_get(&sandbox, "v1.0/me", &read_basic).await.ok();

    // A Graph token with neither: Mail.Read only (consented for the test).
    sandbox
        .admin_post(
            &format!("apps/{}/consent", demo::PUBLIC_APP_ID),
            json!({"resource": MICROSOFT_GRAPH_APP_ID, "scopes": ["Mail.Read"]}),
        )
        .await
        .assert_ok();
    let mail_read = user_token(&sandbox, "https://graph.microsoft.com/Mail.Read").await;
    assert_eq!(crate::common::claims(&mail_read)["scp"], "Mail.Read");
    for path in ["v1.0/me", "v1.0/users"] {
        graph_get(&sandbox, path, &mail_read)
            .await
            .error(403, "Authorization_RequestDenied");
    }
}

#[tokio::test]
async fn an_app_needs_a_user_reading_role() {
    let sandbox = start().await;
    let claims = crate::common::claims(&daemon_token(&sandbox).await);
    assert_eq!(
        claims["roles"],
        json!(["Mail.Read", "Mail.ReadWrite", "Mail.Send", "User.Read.All"])
    );

    let roles = format!("apps/{}/app-roles", demo::CONFIDENTIAL_APP_ID);
    sandbox
        .admin_post(
            &format!("{roles}/revoke"),
            json!({"resource": MICROSOFT_GRAPH_APP_ID}),
        )
        .await
        .assert_ok();
    sandbox
        .admin_post(
            &roles,
            json!({"resource": MICROSOFT_GRAPH_APP_ID, "roles": ["Mail.Send"]}),
        )
        .await
        .assert_ok();
    let mail_send_only = daemon_token(&sandbox).await;
    for path in [
        "v1.0/users".to_owned(),
        format!("v1.0/users/{}", demo::USER_OBJECT_ID),
    ] {
        let answer = graph_get(&sandbox, &path, &mail_send_only).await;
        assert_eq!(
            answer.error(403, "Authorization_RequestDenied"),
            "Insufficient privileges to complete the operation."
        );
        assert!(
            answer.header("www-authenticate").is_none(),
            "403, no challenge"
        );
    }

    // Directory.Read.All grants it as well.
    sandbox
        .admin_post(
            &roles,
            json!({"resource": MICROSOFT_GRAPH_APP_ID, "roles": ["Directory.Read.All"]}),
        )
        .await
        .assert_ok();
    let directory_read = daemon_token(&sandbox).await;
    graph_get(&sandbox, "v1.0/users", &directory_read)
        .await
        .ok();
}

#[tokio::test]
async fn tokens_graph_would_not_accept_get_401_with_a_challenge() {
    let (sandbox, clock) = start_with_fake_clock(Lifetimes::default()).await;
    let assert_401 = |answer: &GraphAnswer, message: &str| {
        assert_eq!(answer.error(401, "InvalidAuthenticationToken"), message);
        let challenge = answer.header("www-authenticate").expect("WWW-Authenticate");
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(
            challenge.contains(&format!("client_id=\"{MICROSOFT_GRAPH_APP_ID}\"")),
            "{challenge}"
        );
    };
    let none = graph_get_with(&sandbox, "v1.0/users", None, None).await;
    assert_401(&none, "Access token is empty.");
    let basic = sandbox
        .http
        .get(sandbox.url("v1.0/me"))
        .basic_auth(demo::USER_UPN, Some(demo::USER_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let garbage = graph_get(&sandbox, "v1.0/users", "not.a.jwt").await;
    garbage.error(401, "InvalidAuthenticationToken");

    // A token for Exchange Online, not Graph.
    let exchange = sandbox.app_token(demo::EXCHANGE_APP_SCOPE).await;
    let wrong_audience = graph_get(&sandbox, "v1.0/users", &exchange).await;
    assert_401(
        &wrong_audience,
        "Access token validation failure. Invalid audience.",
    );

    // Expired: the next token lives one second (the admin API's short_lived fault), then time passes.
    sandbox
        .admin_post(
            "faults/token",
            json!({"kind": "short_lived", "lifetime_seconds": 1}),
        )
        .await
        .assert_ok();
    let short = daemon_token(&sandbox).await;
    graph_get(&sandbox, "v1.0/users?$top=1", &short).await.ok();
    clock.advance(Duration::from_secs(2));
    let expired = graph_get(&sandbox, "v1.0/users?$top=1", &short).await;
    assert_401(
        &expired,
        "Lifetime validation failed, the token is expired.",
    );

    // Not yet valid: the clock is moved back before the token's nbf.
    let fresh = daemon_token(&sandbox).await;
    clock.set(clock_now(&clock) - Duration::from_secs(60));
    let early = graph_get(&sandbox, "v1.0/users", &fresh).await;
    assert_401(&early, "Access token has expired or is not yet valid.");
}

fn clock_now(clock: &m365mail_sandbox::FakeClock) -> std::time::SystemTime {
    m365mail_sandbox::Clock::now(clock)
}

#[tokio::test]
async fn every_answer_carries_request_ids() {
    let sandbox = start().await;
    let token = daemon_token(&sandbox).await;
    let client_id = "7b0c9d7e-1f4a-4e57-9c38-5a0e2f6b1c11";
    let ok = graph_get_with(&sandbox, "v1.0/users?$top=1", Some(&token), Some(client_id)).await;
    ok.ok();
    let request_id = ok.header("request-id").expect("request-id");
    assert!(uuid::Uuid::parse_str(request_id).is_ok());
    assert_eq!(ok.header("client-request-id"), Some(client_id));

    // Without a client id, Graph puts the request id in its place; every request has a new one.
    let second = graph_get_with(&sandbox, "v1.0/users?$top=1", Some(&token), None).await;
    let second_id = second.header("request-id").unwrap();
    assert_ne!(second_id, request_id);
    assert_eq!(second.header("client-request-id"), Some(second_id));

    // Errors echo the client id in the header and in innerError.
    let error = graph_get_with(&sandbox, "v1.0/users/nobody", Some(&token), Some(client_id)).await;
    error.error(404, "Request_ResourceNotFound");
    assert_eq!(
        error.body["error"]["innerError"]["client-request-id"],
        client_id
    );
    let unauthenticated = graph_get_with(&sandbox, "v1.0/me", None, Some(client_id)).await;
    unauthenticated.error(401, "InvalidAuthenticationToken");
    assert_eq!(unauthenticated.header("client-request-id"), Some(client_id));

    let stats = sandbox.sandbox.admin().stats();
    assert_eq!(stats.endpoint("graph"), 4);
}

#[tokio::test]
async fn an_injected_throttle_answers_once_with_retry_after() {
    let sandbox = start().await;
    let token = daemon_token(&sandbox).await;
    let injected = sandbox
        .admin_post(
            "faults/graph",
            json!({"fault": "throttled", "retry_after_seconds": 2, "count": 1}),
        )
        .await;
    assert_eq!(
        injected.assert_ok(),
        &json!({"fault": "throttled", "count": 1})
    );
    let throttled = graph_get(&sandbox, "v1.0/users", &token).await;
    assert_eq!(
        throttled.error(429, "ApplicationThrottled"),
        "Application is over its MailboxConcurrency limit."
    );
    assert_eq!(throttled.header("retry-after"), Some("2"));
    graph_get(&sandbox, "v1.0/users", &token).await.ok();

    sandbox
        .admin_post("faults/graph", json!({"fault": "unavailable", "count": 2}))
        .await
        .assert_ok();
    for _ in 0..2 {
        let unavailable = graph_get(&sandbox, "v1.0/me", &token).await;
        unavailable.error(503, "serviceNotAvailable");
        assert_eq!(unavailable.header("retry-after"), Some("1"));
    }
    graph_get(&sandbox, "v1.0/users", &token).await.ok();

    // The Rust handle, and clearing.
    let admin = sandbox.sandbox.admin();
    admin.inject_graph_fault(
        GraphFault::Throttled {
            retry_after_seconds: 5,
        },
        3,
    );
    graph_get(&sandbox, "v1.0/users", &token)
        .await
        .error(429, "ApplicationThrottled");
    sandbox
        .admin_post("faults/graph/clear", json!({}))
        .await
        .assert_ok();
    graph_get(&sandbox, "v1.0/users", &token).await.ok();

    let bad = sandbox
        .admin_post("faults/graph", json!({"fault": "meltdown"}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// curl, unchanged: the daemon's token as a bearer header, paging by `@odata.nextLink`, a filter, and the
/// headers of a 401.
#[tokio::test]
#[ignore = "needs curl (run by scripts/test.sh)"]
async fn curl_pages_filters_and_sees_graph_errors() {
    let sandbox = start().await;
    let token = daemon_token(&sandbox).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    sandbox.sandbox.write_ca(&ca).unwrap();
    let curl = |extra: &[&str]| {
        let mut command = std::process::Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(extra);
        command
    };
    let authorization = format!("Authorization: Bearer {token}");

    let mut next = Some(sandbox.url("v1.0/users?$top=3&$select=id,userPrincipalName"));
    let mut seen = Vec::new();
    while let Some(url) = next.take() {
        assert!(seen.len() < 20, "paging does not end");
        let page: Value =
            serde_json::from_str(&run_ok(curl(&["-H", &authorization, &url])).await).unwrap();
        seen.extend(ids(&page));
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
    }
    let expected: Vec<String> = demo_users(&sandbox)
        .iter()
        .map(|user| user.object_id.clone())
        .collect();
    assert_eq!(seen, expected);

    let filtered = run_ok(curl(&[
        "-G",
        "-H",
        &authorization,
        "--data-urlencode",
        "$filter=startswith(displayName,'Ad')",
        &sandbox.url("v1.0/users"),
    ]))
    .await;
    let filtered: Value = serde_json::from_str(&filtered).unwrap();
    assert_eq!(upns(&filtered), [demo::USER_UPN]);

    // A 401: status line, challenge and ids in the headers (-i), Graph's JSON after them.
    let refused = run_ok(curl(&[
        "-i",
        "-H",
        "client-request-id: 3f1c3e55-8d1e-4f0e-9d0e-0c7d1b0a9e21",
        &sandbox.url("v1.0/me"),
    ]))
    .await;
    let (head, body) = refused.split_once("\r\n\r\n").expect("headers, then body");
    let head = head.to_ascii_lowercase();
    assert!(head.contains(" 401"), "{head}");
    assert!(head.contains("\nwww-authenticate: bearer "), "{head}");
    assert!(head.contains("\nrequest-id: "), "{head}");
    assert!(
        head.contains("\nclient-request-id: 3f1c3e55-8d1e-4f0e-9d0e-0c7d1b0a9e21"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(body["error"]["message"], "Access token is empty.");
}
