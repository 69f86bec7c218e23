//! What `m365mail setup` does against a tenant (microsoft.md §9.4), end to end over HTTPS: an administrator
//! signed in through the Microsoft Graph Command Line Tools creates the app registration, its secret, its
//! service principal and the consent through Graph, then the Exchange steps through the admin surface —
//! and the token endpoint and the IMAP and SMTP services honour exactly what was created.

use std::collections::HashMap;

use base64::Engine as _;
use m365mail_sandbox::{
    Clock, MailSeed, SandboxConfig, SystemClock, TenantModel, demo,
    tenant::{EXCHANGE_ONLINE_APP_ID, GRAPH_COMMAND_LINE_TOOLS_APP_ID, MICROSOFT_GRAPH_APP_ID},
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Answer, TestSandbox, answer, claims, start, start_with};
use crate::imap::{command, connect, xoauth2};

/// microsoft.md §9.2's ids for §9.3's permission set: (resource, value, type, id).
const SECTION_9_IDS: [(&str, &str, &str, &str); 16] = [
    (
        EXCHANGE_ONLINE_APP_ID,
        "IMAP.AccessAsApp",
        "Role",
        "5e5addcd-3e8d-4e90-baf5-964efab2b20a",
    ),
    (
        EXCHANGE_ONLINE_APP_ID,
        "POP.AccessAsApp",
        "Role",
        "cb842b43-da6e-4506-86fe-bb12199c656d",
    ),
    (
        EXCHANGE_ONLINE_APP_ID,
        "SMTP.SendAsApp",
        "Role",
        "7146a1f0-8703-45b3-9eae-527a64c00995",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "Mail.Send",
        "Role",
        "b633e1c5-b582-4048-a93e-9f11b44c7e96",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "Mail.Read",
        "Role",
        "810c84a8-4a9e-49e6-bf7d-12d183f40d01",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "Mail.ReadWrite",
        "Role",
        "e2a3a72e-5f79-4c64-b1b1-878b674786c9",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "User.Read.All",
        "Role",
        "df021288-bdef-4463-88db-98f22de89214",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "User.Read",
        "Scope",
        "e1fe6dd8-ba31-4d61-89e7-88639da4683d",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "offline_access",
        "Scope",
        "7427e0e9-2fba-42fe-b0c0-848c9e6a8182",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "openid",
        "Scope",
        "37f7f235-527c-4136-accd-4a02d197296e",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "IMAP.AccessAsUser.All",
        "Scope",
        "652390e4-393a-48de-9484-05f9b1212954",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "POP.AccessAsUser.All",
        "Scope",
        "d7b7f2d9-0f45-4ea1-9d42-e50810c06991",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "SMTP.Send",
        "Scope",
        "258f6531-6087-4cc4-bb90-092c5fb3ed3f",
    ),
    (
        MICROSOFT_GRAPH_APP_ID,
        "Mail.Send",
        "Scope",
        "e383f46e-2787-4529-855e-0e479a3ffac0",
    ),
    (
        EXCHANGE_ONLINE_APP_ID,
        "IMAP.AccessAsUser.All",
        "Scope",
        "195adc35-e27b-454b-a7ed-1ecdffa1c09f",
    ),
    (
        EXCHANGE_ONLINE_APP_ID,
        "SMTP.Send",
        "Scope",
        "76faac2a-0f20-42f1-928a-50de5b9dbe52",
    ),
];

const APP_NAME: &str = "m365mail connector";

async fn start_empty() -> TestSandbox {
    start_with(SandboxConfig {
        tenant: TenantModel::empty(),
        imaps: vec!["127.0.0.1:0".parse().unwrap()],
        mail: MailSeed::Welcome,
        ..SandboxConfig::default()
    })
    .await
}

impl TestSandbox {
    /// A Graph call with a bearer token and an optional JSON body.
    async fn graph(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, self.url(&format!("v1.0/{path}")))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request is answered")).await
    }

    /// A Graph token for `upn` through the Graph Command Line Tools (ROPC; setup uses device code).
    async fn graph_tools_token(&self, upn: &str, password: &str) -> String {
        self.ropc(
            GRAPH_COMMAND_LINE_TOOLS_APP_ID,
            upn,
            password,
            "https://graph.microsoft.com/.default",
        )
        .await
        .assert_ok()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn admin_token(&self) -> String {
        self.graph_tools_token(demo::ADMIN_UPN, demo::ADMIN_PASSWORD)
            .await
    }

    async fn client_credentials(&self, client_id: &str, secret: &str, scope: &str) -> Answer {
        self.token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ],
        )
        .await
    }

    async fn admin_get(&self, path: &str) -> Answer {
        self.get_json(&format!("_sandbox/admin/{path}")).await
    }
}

#[track_caller]
fn status(answer: &Answer, expected: u16) -> &Value {
    assert_eq!(answer.status.as_u16(), expected, "body: {}", answer.body);
    &answer.body
}

#[track_caller]
fn graph_error(answer: &Answer, expected: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), expected, "body: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "body: {}", answer.body);
}

/// (value, type) → id of a resource service principal's permissions.
fn permission_ids(principal: &Value) -> HashMap<(String, &'static str), String> {
    let mut ids = HashMap::new();
    for role in principal["appRoles"].as_array().unwrap() {
        assert_eq!(role["allowedMemberTypes"], json!(["Application"]));
        ids.insert(
            (role["value"].as_str().unwrap().to_owned(), "Role"),
            role["id"].as_str().unwrap().to_owned(),
        );
    }
    for scope in principal["oauth2PermissionScopes"].as_array().unwrap() {
        assert!(matches!(scope["type"].as_str(), Some("User" | "Admin")));
        ids.insert(
            (scope["value"].as_str().unwrap().to_owned(), "Scope"),
            scope["id"].as_str().unwrap().to_owned(),
        );
    }
    ids
}

/// The resource principals resolved as setup does: by `(appId='…')` for Graph, by `$filter` for Exchange.
async fn resource_principals(
    sandbox: &TestSandbox,
    token: &str,
) -> (Value, Value, HashMap<(String, &'static str), String>) {
    let graph = sandbox
        .graph(
            Method::GET,
            &format!("servicePrincipals(appId='{MICROSOFT_GRAPH_APP_ID}')"),
            token,
            None,
        )
        .await;
    let graph = status(&graph, 200).clone();
    let exchange = sandbox
        .graph(
            Method::GET,
            &format!(
                "servicePrincipals?$filter=appId eq '{EXCHANGE_ONLINE_APP_ID}'&$select=id,appId,displayName,appRoles,oauth2PermissionScopes"
            ),
            token,
            None,
        )
        .await;
    let list = status(&exchange, 200)["value"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    let exchange = list[0].clone();
    assert_eq!(exchange["displayName"], "Office 365 Exchange Online");
    assert!(
        exchange.get("servicePrincipalNames").is_none(),
        "$select keeps only what was asked: {exchange}"
    );
    let mut ids = HashMap::new();
    for (resource, principal) in [
        (MICROSOFT_GRAPH_APP_ID, &graph),
        (EXCHANGE_ONLINE_APP_ID, &exchange),
    ] {
        for ((value, kind), id) in permission_ids(principal) {
            ids.insert((format!("{resource}/{value}"), kind), id);
        }
    }
    (graph, exchange, ids)
}

fn id_of(
    ids: &HashMap<(String, &'static str), String>,
    resource: &str,
    value: &str,
    kind: &'static str,
) -> String {
    ids.get(&(format!("{resource}/{value}"), kind))
        .unwrap_or_else(|| panic!("{resource} has no {kind} {value}"))
        .clone()
}

#[tokio::test]
async fn the_section_9_4_sequence_builds_an_app_that_tokens_and_imap_honour() {
    let sandbox = start_empty().await;
    let admin = sandbox.admin_token().await;
    let scp = claims(&admin)["scp"].as_str().unwrap().to_owned();
    for needed in [
        "Application.ReadWrite.All",
        "AppRoleAssignment.ReadWrite.All",
        "DelegatedPermissionGrant.ReadWrite.All",
    ] {
        assert!(scp.split(' ').any(|s| s == needed), "{scp}");
    }

    // 4. (read first, as setup does) the resource principals, their permission ids as §9.2 gives them.
    let (graph_sp, exchange_sp, ids) = resource_principals(&sandbox, &admin).await;
    for (resource, value, kind, expected) in SECTION_9_IDS {
        let kind = if kind == "Role" { "Role" } else { "Scope" };
        assert_eq!(
            id_of(&ids, resource, value, kind),
            expected,
            "{value} ({kind})"
        );
    }
    let graph_sp_id = graph_sp["id"].as_str().unwrap().to_owned();
    let exchange_sp_id = exchange_sp["id"].as_str().unwrap().to_owned();

    // Idempotency reads: nothing of that name yet.
    let none = sandbox
        .graph(
            Method::GET,
            &format!("applications?$filter=displayName eq '{APP_NAME}'"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status(&none, 200)["value"], json!([]));

    // 1. The application, with §9.4's body (ids from the lookup).
    let graph_id = |value, kind| id_of(&ids, MICROSOFT_GRAPH_APP_ID, value, kind);
    let exchange_id = |value, kind| id_of(&ids, EXCHANGE_ONLINE_APP_ID, value, kind);
    let body = json!({
        "displayName": APP_NAME,
        "signInAudience": "AzureADMyOrg",
        "isFallbackPublicClient": true,
        "publicClient": {"redirectUris": ["http://localhost"]},
        "requiredResourceAccess": [
            {"resourceAppId": MICROSOFT_GRAPH_APP_ID, "resourceAccess": [
                {"id": graph_id("Mail.Send", "Role"), "type": "Role"},
                {"id": graph_id("User.Read.All", "Role"), "type": "Role"},
                {"id": graph_id("offline_access", "Scope"), "type": "Scope"},
                {"id": graph_id("User.Read", "Scope"), "type": "Scope"},
                {"id": graph_id("IMAP.AccessAsUser.All", "Scope"), "type": "Scope"},
                {"id": graph_id("SMTP.Send", "Scope"), "type": "Scope"}]},
            {"resourceAppId": EXCHANGE_ONLINE_APP_ID, "resourceAccess": [
                {"id": exchange_id("IMAP.AccessAsApp", "Role"), "type": "Role"},
                {"id": exchange_id("POP.AccessAsApp", "Role"), "type": "Role"}]}
        ]
    });
    let created = sandbox
        .graph(Method::POST, "applications", &admin, Some(body.clone()))
        .await;
    let application = status(&created, 201).clone();
    let object_id = application["id"].as_str().unwrap().to_owned();
    let app_id = application["appId"].as_str().unwrap().to_owned();
    assert_ne!(object_id, app_id);
    assert_eq!(application["displayName"], APP_NAME);
    assert_eq!(application["isFallbackPublicClient"], true);
    assert_eq!(
        application["publicClient"]["redirectUris"],
        json!(["http://localhost"])
    );
    assert_eq!(application["passwordCredentials"], json!([]));
    // requiredResourceAccess comes back with the same ids (order within a resource: roles, then scopes).
    let sorted = |value: &Value| {
        let mut all: Vec<String> = value
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|resource| {
                let app = resource["resourceAppId"].as_str().unwrap().to_owned();
                resource["resourceAccess"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |a| format!("{app} {} {}", a["id"], a["type"]))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        sorted(&application["requiredResourceAccess"]),
        sorted(&body["requiredResourceAccess"])
    );
    for filter in [
        format!("appId eq '{app_id}'"),
        format!("displayName eq '{APP_NAME}'"),
    ] {
        let found = sandbox
            .graph(
                Method::GET,
                &format!("applications?$filter={filter}"),
                &admin,
                None,
            )
            .await;
        let found = status(&found, 200)["value"].as_array().unwrap().clone();
        assert_eq!(found.len(), 1, "{filter}");
        assert_eq!(found[0]["id"], object_id.as_str());
    }
    let by_app_id = sandbox
        .graph(
            Method::GET,
            &format!("applications(appId='{app_id}')"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status(&by_app_id, 200)["id"], object_id.as_str());

    // 2. A secret, shown once.
    let password = sandbox
        .graph(
            Method::POST,
            &format!("applications/{object_id}/addPassword"),
            &admin,
            Some(json!({"passwordCredential": {"displayName": "m365mail", "endDateTime": "2099-01-01T00:00:00Z"}})),
        )
        .await;
    let password = status(&password, 200).clone();
    let secret = password["secretText"].as_str().unwrap().to_owned();
    assert_eq!(password["endDateTime"], "2099-01-01T00:00:00Z");
    assert_eq!(password["displayName"], "m365mail");
    assert_eq!(password["hint"], &secret[..3]);
    assert!(uuid::Uuid::parse_str(password["keyId"].as_str().unwrap()).is_ok());
    let read_back = sandbox
        .graph(
            Method::GET,
            &format!("applications/{object_id}"),
            &admin,
            None,
        )
        .await;
    let credentials = &status(&read_back, 200)["passwordCredentials"];
    assert_eq!(credentials[0]["keyId"], password["keyId"]);
    assert_eq!(
        credentials[0]["secretText"],
        Value::Null,
        "never shown again"
    );

    // No service principal yet: client credentials are refused.
    sandbox
        .client_credentials(&app_id, &secret, demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(400, "invalid_client", 7000229);

    // 3. The client service principal (a second one is a conflict).
    let sp = sandbox
        .graph(
            Method::POST,
            "servicePrincipals",
            &admin,
            Some(json!({"appId": app_id})),
        )
        .await;
    let client_sp_id = status(&sp, 201)["id"].as_str().unwrap().to_owned();
    assert_ne!(
        client_sp_id, object_id,
        "the enterprise application's id is its own"
    );
    let again = sandbox
        .graph(
            Method::POST,
            "servicePrincipals",
            &admin,
            Some(json!({"appId": app_id})),
        )
        .await;
    graph_error(&again, 409, "Request_MultipleObjectsWithSameKeyValue");
    let found = sandbox
        .graph(
            Method::GET,
            &format!("servicePrincipals?$filter=appId eq '{app_id}'"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status(&found, 200)["value"][0]["id"], client_sp_id.as_str());
    let one = sandbox
        .graph(
            Method::GET,
            &format!("servicePrincipals/{client_sp_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status(&one, 200)["appId"], app_id.as_str());

    // A token now, but without roles: nothing is consented.
    let bare = sandbox
        .client_credentials(&app_id, &secret, demo::EXCHANGE_APP_SCOPE)
        .await;
    assert!(
        claims(bare.assert_ok()["access_token"].as_str().unwrap())
            .get("roles")
            .is_none()
    );

    // 5. Admin consent for the application permissions.
    for (resource_sp, role) in [
        (&exchange_sp_id, exchange_id("IMAP.AccessAsApp", "Role")),
        (&exchange_sp_id, exchange_id("POP.AccessAsApp", "Role")),
        (&graph_sp_id, graph_id("Mail.Send", "Role")),
        (&graph_sp_id, graph_id("User.Read.All", "Role")),
    ] {
        let assigned = sandbox
            .graph(
                Method::POST,
                &format!("servicePrincipals/{resource_sp}/appRoleAssignedTo"),
                &admin,
                Some(json!({"principalId": client_sp_id, "resourceId": resource_sp, "appRoleId": role})),
            )
            .await;
        let assignment = status(&assigned, 201);
        assert_eq!(assignment["appRoleId"], role.as_str());
        assert_eq!(assignment["principalId"], client_sp_id.as_str());
        assert_eq!(assignment["principalType"], "ServicePrincipal");
    }
    let duplicate = sandbox
        .graph(
            Method::POST,
            &format!("servicePrincipals/{exchange_sp_id}/appRoleAssignedTo"),
            &admin,
            Some(json!({"principalId": client_sp_id, "resourceId": exchange_sp_id, "appRoleId": exchange_id("IMAP.AccessAsApp", "Role")})),
        )
        .await;
    graph_error(&duplicate, 400, "Request_BadRequest");
    let assigned = sandbox
        .graph(
            Method::GET,
            &format!("servicePrincipals/{exchange_sp_id}/appRoleAssignedTo"),
            &admin,
            None,
        )
        .await;
    let ours: Vec<&Value> = status(&assigned, 200)["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["principalId"] == client_sp_id.as_str())
        .collect();
    assert_eq!(ours.len(), 2);

    // 6. Delegated permissions for all users, then read back by clientId.
    let grant = sandbox
        .graph(
            Method::POST,
            "oauth2PermissionGrants",
            &admin,
            Some(json!({"clientId": client_sp_id, "consentType": "AllPrincipals", "resourceId": graph_sp_id,
                        "scope": "User.Read offline_access IMAP.AccessAsUser.All SMTP.Send"})),
        )
        .await;
    let grant = status(&grant, 201).clone();
    assert_eq!(grant["principalId"], Value::Null);
    let grants = sandbox
        .graph(
            Method::GET,
            &format!("oauth2PermissionGrants?$filter=clientId eq '{client_sp_id}'"),
            &admin,
            None,
        )
        .await;
    let grants = status(&grants, 200)["value"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["id"], grant["id"]);
    assert_eq!(
        grants[0]["scope"],
        "User.Read offline_access IMAP.AccessAsUser.All SMTP.Send"
    );

    // 7. Tokens carry exactly what was granted.
    let exchange_token = sandbox
        .client_credentials(&app_id, &secret, demo::EXCHANGE_APP_SCOPE)
        .await;
    let exchange_token = exchange_token.assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        claims(&exchange_token)["roles"],
        json!(["IMAP.AccessAsApp", "POP.AccessAsApp"])
    );
    let graph_token = sandbox
        .client_credentials(&app_id, &secret, demo::GRAPH_APP_SCOPE)
        .await;
    assert_eq!(
        claims(graph_token.assert_ok()["access_token"].as_str().unwrap())["roles"],
        json!(["Mail.Send", "User.Read.All"])
    );
    assert_eq!(claims(&exchange_token)["oid"], client_sp_id.as_str());

    // IMAP: signed in, but not connected until Exchange knows the principal and its FullAccess.
    let select = |token: String| {
        let sandbox = &sandbox;
        async move {
            let (mut imap, _) = connect(sandbox).await;
            let auth = format!("AUTHENTICATE XOAUTH2 {}", xoauth2(demo::USER_UPN, &token));
            assert_eq!(
                command(&mut imap, "A1", &auth).await,
                ["A1 OK AUTHENTICATE completed.\r\n"]
            );
            command(&mut imap, "A2", "SELECT INBOX").await
        }
    };
    let not_connected = ["A2 BAD User is authenticated but not connected.\r\n"];
    assert_eq!(select(exchange_token.clone()).await, not_connected);

    // The classic mistake: New-ServicePrincipal with the app registration's object id.
    let wrong = sandbox
        .admin_post(
            "exchange/service-principals",
            json!({"AppId": app_id, "ObjectId": object_id, "DisplayName": "m365mail"}),
        )
        .await;
    assert_eq!(wrong.status.as_u16(), 201, "{}", wrong.body);
    let added = sandbox
        .admin_post(
            &format!("mailboxes/{}/permissions", demo::USER_UPN),
            json!({"User": app_id, "AccessRights": ["FullAccess"]}),
        )
        .await;
    assert_eq!(added.assert_ok()[0]["User"], object_id.as_str());
    assert_eq!(select(exchange_token.clone()).await, not_connected);
    let report = sandbox
        .admin_get(&format!(
            "exchange/service-principals/{app_id}/authorization?resource={}",
            demo::USER_UPN
        ))
        .await;
    let report = report.assert_ok();
    assert_eq!(report["ObjectIdMatchesEntra"], false, "{report}");
    assert_eq!(report["EntraServicePrincipalId"], client_sp_id.as_str());
    assert_eq!(report["FullAccess"], true);
    assert_eq!(
        report["ExchangeAppRoles"],
        json!(["IMAP.AccessAsApp", "POP.AccessAsApp"])
    );

    // Fixed: removed and registered with the enterprise application's id; FullAccess granted again.
    sandbox
        .admin_post(
            &format!("exchange/service-principals/{app_id}/remove"),
            json!({}),
        )
        .await
        .assert_ok();
    let right = sandbox
        .admin_post(
            "exchange/service-principals",
            json!({"AppId": app_id, "ObjectId": client_sp_id}),
        )
        .await;
    assert_eq!(right.status.as_u16(), 201, "{}", right.body);
    assert_eq!(
        select(exchange_token.clone()).await,
        not_connected,
        "no FullAccess yet"
    );
    sandbox
        .admin_post(
            &format!("mailboxes/{}/permissions", demo::USER_UPN),
            json!({"User": client_sp_id, "AccessRights": ["FullAccess"]}),
        )
        .await
        .assert_ok();
    let selected = select(exchange_token.clone()).await;
    assert_eq!(
        selected.last().unwrap(),
        "A2 OK [READ-WRITE] SELECT completed.\r\n",
        "{selected:?}"
    );
    let permissions = sandbox
        .admin_get(&format!("mailboxes/{}/permissions", demo::USER_UPN))
        .await;
    assert_eq!(
        permissions.assert_ok(),
        &json!([{"Identity": demo::USER_UPN, "User": client_sp_id, "UserType": "ServicePrincipal",
                 "AccessRights": ["FullAccess"], "IsInherited": false, "Deny": false}])
    );
    let registered = sandbox.admin_get("exchange/service-principals").await;
    assert_eq!(
        registered.assert_ok(),
        &json!([{"Identity": client_sp_id, "AppId": app_id, "ObjectId": client_sp_id, "DisplayName": ""}])
    );

    // Delegated: ROPC works (public client flows on), with the scopes consented under Graph.
    let ropc = sandbox.user_ropc(&app_id, demo::IMAP_SCOPE).await;
    assert_eq!(
        claims(ropc.assert_ok()["access_token"].as_str().unwrap())["scp"],
        "IMAP.AccessAsUser.All"
    );
    sandbox
        .user_ropc(&app_id, demo::POP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 65001);
    let patched = sandbox
        .graph(
            Method::PATCH,
            &format!("oauth2PermissionGrants/{}", grant["id"].as_str().unwrap()),
            &admin,
            Some(json!({"scope": "User.Read offline_access IMAP.AccessAsUser.All POP.AccessAsUser.All SMTP.Send"})),
        )
        .await;
    status(&patched, 204);
    sandbox
        .user_ropc(&app_id, demo::POP_SCOPE)
        .await
        .assert_ok();

    // Public client flows off: a password sign-in without the secret is refused as before.
    let patched = sandbox
        .graph(
            Method::PATCH,
            &format!("applications/{object_id}"),
            &admin,
            Some(json!({"isFallbackPublicClient": false})),
        )
        .await;
    status(&patched, 204);
    sandbox
        .user_ropc(&app_id, demo::IMAP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 7000218);
}

#[tokio::test]
async fn non_admins_bad_bodies_and_missing_permissions_are_refused() {
    let sandbox = start().await;
    // A user without an admin role, even with the Graph Command Line Tools' scopes.
    let user = sandbox
        .graph_tools_token(demo::USER_UPN, demo::USER_PASSWORD)
        .await;
    for (method, path, body) in [
        (
            Method::POST,
            "applications",
            Some(json!({"displayName": "x"})),
        ),
        (Method::GET, "applications", None),
        (Method::GET, "oauth2PermissionGrants", None),
    ] {
        let refused = sandbox.graph(method, path, &user, body).await;
        graph_error(&refused, 403, "Authorization_RequestDenied");
    }
    // A token of an app without the permission.
    let mail_client = sandbox
        .user_ropc(demo::PUBLIC_APP_ID, "https://graph.microsoft.com/.default")
        .await;
    let mail_client = mail_client.assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = sandbox
        .graph(Method::GET, "servicePrincipals", &mail_client, None)
        .await;
    graph_error(&refused, 403, "Authorization_RequestDenied");
    // No token at all.
    let anonymous = sandbox
        .http
        .get(sandbox.url("v1.0/applications"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let admin = sandbox.admin_token().await;
    let not_json = sandbox
        .http
        .post(sandbox.url("v1.0/applications"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    graph_error(&answer(not_json).await, 400, "Request_BadRequest");
    for body in [
        json!({"signInAudience": "AzureADMyOrg"}),
        json!({"displayName": "x", "unknownProperty": 1}),
        json!({"displayName": "x", "requiredResourceAccess": [{"resourceAppId": MICROSOFT_GRAPH_APP_ID,
            "resourceAccess": [{"id": "00000000-0000-0000-0000-000000000000", "type": "Role"}]}]}),
        json!({"displayName": "x", "requiredResourceAccess": [{"resourceAppId": MICROSOFT_GRAPH_APP_ID,
            "resourceAccess": [{"id": "b633e1c5-b582-4048-a93e-9f11b44c7e96", "type": "Scope"}]}]}),
        json!({"displayName": "x", "signInAudience": "Everyone"}),
    ] {
        let refused = sandbox
            .graph(Method::POST, "applications", &admin, Some(body.clone()))
            .await;
        graph_error(&refused, 400, "Request_BadRequest");
    }
    let unknown = sandbox
        .graph(
            Method::GET,
            "applications/00000000-0000-4000-8000-000000000000",
            &admin,
            None,
        )
        .await;
    graph_error(&unknown, 404, "Request_ResourceNotFound");
    let unsupported = sandbox
        .graph(
            Method::GET,
            "applications?$filter=startswith(displayName,'m')",
            &admin,
            None,
        )
        .await;
    graph_error(&unsupported, 400, "Request_UnsupportedQuery");
    let bad_scope = sandbox
        .graph(
            Method::POST,
            "oauth2PermissionGrants",
            &admin,
            Some(json!({"clientId": demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID, "consentType": "AllPrincipals",
                        "resourceId": "00000000-0000-4000-8000-000000000000", "scope": "User.Read"})),
        )
        .await;
    graph_error(&bad_scope, 404, "Request_ResourceNotFound");

    // The demo apps are there, the first-party Graph Command Line Tools are not among the applications.
    let apps = sandbox
        .graph(Method::GET, "applications", &admin, None)
        .await;
    let apps = status(&apps, 200)["value"].as_array().unwrap().clone();
    assert!(apps.iter().any(|a| a["appId"] == demo::CONFIDENTIAL_APP_ID));
    assert!(
        !apps
            .iter()
            .any(|a| a["appId"] == GRAPH_COMMAND_LINE_TOOLS_APP_ID)
    );
    let tools = sandbox
        .graph(
            Method::GET,
            &format!("servicePrincipals(appId='{GRAPH_COMMAND_LINE_TOOLS_APP_ID}')"),
            &admin,
            None,
        )
        .await;
    assert_eq!(
        status(&tools, 200)["displayName"],
        "Microsoft Graph Command Line Tools"
    );
    // The demo daemon's grants read back from the model.
    let daemon_sp = demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID;
    let assignments = sandbox
        .graph(
            Method::GET,
            &format!("servicePrincipals/{daemon_sp}/appRoleAssignments"),
            &admin,
            None,
        )
        .await;
    assert_eq!(
        status(&assignments, 200)["value"].as_array().unwrap().len(),
        7
    );
}

/// Creates an app with a service principal and returns (object id, app id).
async fn app_with_principal(sandbox: &TestSandbox, admin: &str, name: &str) -> (String, String) {
    let created = sandbox
        .graph(
            Method::POST,
            "applications",
            admin,
            Some(json!({"displayName": name})),
        )
        .await;
    let created = status(&created, 201).clone();
    let app_id = created["appId"].as_str().unwrap().to_owned();
    let sp = sandbox
        .graph(
            Method::POST,
            "servicePrincipals",
            admin,
            Some(json!({"appId": app_id})),
        )
        .await;
    status(&sp, 201);
    (created["id"].as_str().unwrap().to_owned(), app_id)
}

#[tokio::test]
async fn remove_password_invalidates_the_secret() {
    let sandbox = start().await;
    let admin = sandbox.admin_token().await;
    let (object_id, app_id) = app_with_principal(&sandbox, &admin, "secret rotation").await;
    let added = sandbox
        .graph(
            Method::POST,
            &format!("applications(appId='{app_id}')/addPassword"),
            &admin,
            None,
        )
        .await;
    let added = status(&added, 200).clone();
    let secret = added["secretText"].as_str().unwrap();
    // Default lifetime: two years.
    let end = chrono::DateTime::parse_from_rfc3339(added["endDateTime"].as_str().unwrap()).unwrap();
    let start_time =
        chrono::DateTime::parse_from_rfc3339(added["startDateTime"].as_str().unwrap()).unwrap();
    assert_eq!((end - start_time).num_days(), 730);
    sandbox
        .client_credentials(&app_id, secret, demo::GRAPH_APP_SCOPE)
        .await
        .assert_ok();
    let removed = sandbox
        .graph(
            Method::POST,
            &format!("applications/{object_id}/removePassword"),
            &admin,
            Some(json!({"keyId": added["keyId"]})),
        )
        .await;
    status(&removed, 204);
    sandbox
        .client_credentials(&app_id, secret, demo::GRAPH_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 700025);
    let again = sandbox
        .graph(
            Method::POST,
            &format!("applications/{object_id}/removePassword"),
            &admin,
            Some(json!({"keyId": added["keyId"]})),
        )
        .await;
    graph_error(&again, 404, "Request_ResourceNotFound");
}

#[tokio::test]
async fn a_certificate_patched_into_key_credentials_signs_client_assertions() {
    let sandbox = start().await;
    let admin = sandbox.admin_token().await;
    let (object_id, app_id) = app_with_principal(&sandbox, &admin, "certificate daemon").await;
    let certificate = demo::certificate();
    let der =
        rustls_pki_types::pem::PemObject::from_pem_slice(certificate.certificate_pem.as_bytes())
            .map(|der: rustls_pki_types::CertificateDer<'_>| der.as_ref().to_vec())
            .unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(&der);
    let patched = sandbox
        .graph(
            Method::PATCH,
            &format!("applications/{object_id}"),
            &admin,
            Some(json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "key": key,
                                            "displayName": "CN=m365mail"}]})),
        )
        .await;
    status(&patched, 204);
    let read = sandbox
        .graph(
            Method::GET,
            &format!("applications/{object_id}?$select=keyCredentials"),
            &admin,
            None,
        )
        .await;
    let keys = status(&read, 200)["keyCredentials"].clone();
    assert_eq!(
        keys[0]["customKeyIdentifier"],
        certificate.sha1_thumbprint_hex.as_str()
    );
    assert_eq!(keys[0]["key"], Value::Null);
    // Keeping the certificate by keyId alone in a later PATCH.
    let keep = sandbox
        .graph(
            Method::PATCH,
            &format!("applications/{object_id}"),
            &admin,
            Some(json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "keyId": keys[0]["keyId"]}]})),
        )
        .await;
    status(&keep, 204);
    let bad = sandbox
        .graph(
            Method::PATCH,
            &format!("applications/{object_id}"),
            &admin,
            Some(json!({"keyCredentials": [{"type": "AsymmetricX509Cert", "usage": "Verify", "key": "bm90IGEgY2VydA=="}]})),
        )
        .await;
    graph_error(&bad, 400, "Request_BadRequest");

    let now = SystemClock.unix_seconds() as i64;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5t = Some(certificate.x5t.clone());
    let assertion = jsonwebtoken::encode(
        &header,
        &json!({"aud": sandbox.token_url(demo::TENANT_ID), "iss": app_id, "sub": app_id,
                "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(certificate.private_key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let token = sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &app_id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
                ("scope", demo::GRAPH_APP_SCOPE),
            ],
        )
        .await;
    assert_eq!(
        claims(token.assert_ok()["access_token"].as_str().unwrap())["appid"],
        app_id.as_str()
    );
}

#[tokio::test]
async fn the_graph_command_line_tools_sign_an_administrator_in_by_device_code() {
    let sandbox = start_empty().await;
    let started = sandbox
        .post_form(
            &sandbox.url(&format!("{}/oauth2/v2.0/devicecode", demo::TENANT_ID)),
            &[
                ("client_id", GRAPH_COMMAND_LINE_TOOLS_APP_ID),
                ("scope", "https://graph.microsoft.com/Application.ReadWrite.All https://graph.microsoft.com/AppRoleAssignment.ReadWrite.All offline_access"),
            ],
        )
        .await;
    let started = started.assert_ok().clone();
    sandbox
        .sandbox
        .admin()
        .approve_device_code(started["user_code"].as_str().unwrap(), demo::ADMIN_UPN)
        .unwrap();
    let token = sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", GRAPH_COMMAND_LINE_TOOLS_APP_ID),
                ("device_code", started["device_code"].as_str().unwrap()),
            ],
        )
        .await;
    let token = token.assert_ok().clone();
    assert!(token["refresh_token"].is_string());
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(
        claims(access)["scp"],
        "Application.ReadWrite.All AppRoleAssignment.ReadWrite.All"
    );
    let apps = sandbox
        .graph(Method::GET, "applications", access, None)
        .await;
    assert_eq!(
        status(&apps, 200)["value"],
        json!([]),
        "the empty tenant has no apps"
    );
    // Its only users: the administrator and one user with a mailbox.
    let model = sandbox.sandbox.admin().tenant_model();
    let tenant = &model.tenants[0];
    let users: Vec<(&str, bool)> = tenant
        .users
        .iter()
        .map(|u| (u.upn.as_str(), u.global_admin))
        .collect();
    assert_eq!(users, [(demo::ADMIN_UPN, true), (demo::USER_UPN, false)]);
    assert_eq!(tenant.mailboxes.len(), 1);
    assert!(tenant.exchange_service_principals.is_empty());
}

/// Connects to SMTPS, says EHLO and answers AUTH XOAUTH2: the reply's last line.
async fn smtp_auth(sandbox: &TestSandbox, token: &str) -> String {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    type Tls = BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    async fn reply(stream: &mut Tls) -> String {
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return line;
            }
        }
    }
    let addr = sandbox
        .sandbox
        .listeners()
        .iter()
        .find(|l| l.service == "smtps")
        .unwrap()
        .addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = crate::common::mail_tls(&sandbox.sandbox)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut stream = BufReader::new(tls);
    reply(&mut stream).await;
    stream
        .get_mut()
        .write_all(b"EHLO client.example\r\n")
        .await
        .unwrap();
    reply(&mut stream).await;
    let line = format!("AUTH XOAUTH2 {}\r\n", xoauth2(demo::USER_UPN, token));
    stream.get_mut().write_all(line.as_bytes()).await.unwrap();
    reply(&mut stream).await
}

#[tokio::test]
async fn exchange_admin_switches_are_enforced_by_smtp() {
    let sandbox = start_with(SandboxConfig {
        smtps: vec!["127.0.0.1:0".parse().unwrap()],
        ..SandboxConfig::default()
    })
    .await;
    let smtp_token = sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::SMTP_SCOPE)
        .await
        .assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(smtp_auth(&sandbox, &smtp_token).await.starts_with("235 "));
    let off = sandbox
        .admin_post(
            "exchange/transport-config",
            json!({"SmtpClientAuthenticationDisabled": true}),
        )
        .await;
    assert_eq!(off.assert_ok()["SmtpClientAuthenticationDisabled"], true);
    let refused = smtp_auth(&sandbox, &smtp_token).await;
    assert!(refused.starts_with("535 5.7.139 "), "{refused}");
    assert_eq!(
        sandbox
            .admin_get("exchange/transport-config")
            .await
            .assert_ok()["SmtpClientAuthenticationDisabled"],
        true
    );
    sandbox
        .admin_post(
            "exchange/transport-config",
            json!({"SmtpClientAuthenticationDisabled": false}),
        )
        .await
        .assert_ok();
    assert!(smtp_auth(&sandbox, &smtp_token).await.starts_with("235 "));

    // SendAs for a user, through Add-RecipientPermission, then removed again.
    let granted = sandbox
        .admin_post(
            &format!("mailboxes/{}/recipient-permissions", demo::SHARED_MAILBOX),
            json!({"Trustee": demo::USER_UPN, "AccessRights": ["SendAs"]}),
        )
        .await;
    assert!(
        granted
            .assert_ok()
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Trustee"] == demo::USER_UPN)
    );
    let removed = sandbox
        .admin_post(
            &format!(
                "mailboxes/{}/recipient-permissions/remove",
                demo::SHARED_MAILBOX
            ),
            json!({"Trustee": demo::USER_UPN, "AccessRights": ["SendAs"]}),
        )
        .await;
    assert_eq!(removed.assert_ok()["removed"], 1);
    let wrong_right = sandbox
        .admin_post(
            &format!("mailboxes/{}/permissions", demo::USER_UPN),
            json!({"User": demo::SECOND_USER_UPN, "AccessRights": ["ReadPermission"]}),
        )
        .await;
    assert_eq!(wrong_right.status.as_u16(), 400);
    let unregistered = sandbox
        .admin_post(
            &format!("mailboxes/{}/permissions", demo::USER_UPN),
            json!({"User": "00000000-0000-4000-8000-000000000000", "AccessRights": ["FullAccess"]}),
        )
        .await;
    assert_eq!(unregistered.status.as_u16(), 404);
    let conflict = sandbox
        .admin_post(
            "exchange/service-principals",
            json!({"AppId": demo::CONFIDENTIAL_APP_ID, "ObjectId": demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID}),
        )
        .await;
    assert_eq!(conflict.status.as_u16(), 409);
}
