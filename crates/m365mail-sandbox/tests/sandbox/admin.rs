use m365mail_sandbox::demo;
use serde_json::json;

use crate::common::start;

#[tokio::test]
async fn stats_count_requests_per_endpoint_and_grant_type() {
    let sandbox = start().await;
    let requests = (0..5).map(|_| {
        sandbox.token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo::CONFIDENTIAL_APP_ID),
                ("client_secret", demo::CONFIDENTIAL_APP_SECRET),
                ("scope", demo::EXCHANGE_APP_SCOPE),
            ],
        )
    });
    for answer in futures_join_all(requests).await {
        answer.assert_ok();
    }
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_ok();
    sandbox
        .get_json(&format!("{}/discovery/v2.0/keys", demo::TENANT_ID))
        .await
        .assert_ok();

    let stats = sandbox.sandbox.admin().stats();
    assert_eq!(stats.grant("client_credentials"), 5);
    assert_eq!(stats.grant("password"), 1);
    assert_eq!(stats.endpoint("token"), 6);
    assert_eq!(stats.endpoint("keys"), 1);
    assert_eq!(stats.total_requests, 7);

    let over_http = sandbox.get_json("_sandbox/admin/stats").await;
    assert_eq!(
        over_http.assert_ok()["by_grant_type"]["client_credentials"],
        5
    );
    assert_eq!(over_http.body["by_endpoint"]["token"], 6);
    // Admin calls are not counted.
    assert_eq!(sandbox.sandbox.admin().stats().total_requests, 7);

    sandbox
        .admin_post("stats/reset", json!({}))
        .await
        .assert_ok();
    assert_eq!(
        sandbox.sandbox.admin().stats(),
        m365mail_sandbox::RequestStats::default()
    );
}

/// The counters keep the grant names Entra knows; any other `grant_type` a client sends is counted
/// under `(other)`, so a client cannot make the sandbox keep its strings (40 junk values of 256 KiB
/// each used to add 10 MiB of keys).
#[tokio::test]
async fn stats_keep_known_grant_types_and_count_any_other_under_one_key() {
    let sandbox = start().await;
    for index in 0..40 {
        let junk = format!("{index}-{}", "x".repeat(256 * 1024));
        sandbox
            .token(
                demo::TENANT_ID,
                &[("grant_type", &junk), ("client_id", demo::PUBLIC_APP_ID)],
            )
            .await
            .assert_error(400, "unsupported_grant_type", 70003);
    }
    for grant_type in [
        "password",
        "client_credentials",
        "refresh_token",
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:device_code",
        "device_code",
        "",
    ] {
        sandbox
            .token(
                demo::TENANT_ID,
                &[
                    ("grant_type", grant_type),
                    ("client_id", demo::PUBLIC_APP_ID),
                ],
            )
            .await;
    }
    sandbox
        .token(demo::TENANT_ID, &[("client_id", demo::PUBLIC_APP_ID)])
        .await
        .assert_error(400, "invalid_request", 900144);
    let stats = sandbox.sandbox.admin().stats();
    let serialized = serde_json::to_string(&stats).unwrap();
    assert_eq!(
        serde_json::to_value(&stats).unwrap(),
        json!({
            "total_requests": 48,
            "by_endpoint": {"token": 48},
            "by_grant_type": {
                "(none)": 2,
                "(other)": 40,
                "authorization_code": 1,
                "client_credentials": 1,
                "device_code": 1,
                "password": 1,
                "refresh_token": 1,
                "urn:ietf:params:oauth:grant-type:device_code": 1,
            },
        }),
        "stats JSON of {} bytes",
        serialized.len()
    );
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut outputs = Vec::new();
    let handles: Vec<_> = futures.collect();
    for future in handles {
        outputs.push(future.await);
    }
    outputs
}

#[tokio::test]
async fn user_flags_over_http_change_sign_in_answers() {
    let sandbox = start().await;
    let ropc = || sandbox.user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE);
    let flagged = sandbox
        .admin_post(
            &format!("users/{}", demo::USER_UPN),
            json!({"mfa_required": true}),
        )
        .await;
    assert_eq!(flagged.assert_ok()["mfa_required"], true);
    assert!(
        flagged.body.get("password").is_none(),
        "never reports the password"
    );
    ropc().await.assert_error(400, "invalid_grant", 50076);
    // Each step clears the previous flag and sets the next.
    for (flags, code) in [
        (json!({"mfa_required": false, "locked": true}), 50053),
        (json!({"locked": false, "password_expired": true}), 50055),
        (json!({"password_expired": false, "disabled": true}), 50057),
    ] {
        sandbox
            .admin_post(&format!("users/{}", demo::USER_UPN), flags)
            .await
            .assert_ok();
        ropc().await.assert_error(400, "invalid_grant", code);
    }
    sandbox
        .admin_post(
            &format!("users/{}", demo::USER_UPN),
            json!({"disabled": false}),
        )
        .await
        .assert_ok();
    ropc().await.assert_ok();

    let unknown = sandbox
        .admin_post(
            "users/nobody@contoso.onmicrosoft.com",
            json!({"locked": true}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.body,
        json!({"error": "not_found", "message": "user not found: nobody@contoso.onmicrosoft.com"})
    );
    let bad_field = sandbox
        .admin_post(
            &format!("users/{}", demo::USER_UPN),
            json!({"colour": "blue"}),
        )
        .await;
    assert_eq!(bad_field.status, 400);
    assert_eq!(bad_field.body["error"], "invalid_request");
    assert!(
        bad_field.body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid request: unknown field `colour`"),
        "{}",
        bad_field.body
    );
}

#[tokio::test]
async fn app_changes_over_http() {
    let sandbox = start().await;
    let client_credentials = || {
        sandbox.token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo::CONFIDENTIAL_APP_ID),
                ("client_secret", demo::CONFIDENTIAL_APP_SECRET),
                ("scope", demo::EXCHANGE_APP_SCOPE),
            ],
        )
    };
    client_credentials().await.assert_ok();

    // Revoking the Exchange app roles leaves a token without roles, as Entra does.
    let revoked = sandbox
        .admin_post(
            &format!("apps/{}/app-roles/revoke", demo::CONFIDENTIAL_APP_ID),
            json!({"resource": "https://outlook.office365.com"}),
        )
        .await;
    assert_eq!(revoked.assert_ok()["removed"], 1);
    let token = client_credentials().await;
    assert!(
        crate::common::claims(token.assert_ok()["access_token"].as_str().unwrap())
            .get("roles")
            .is_none()
    );
    sandbox
        .admin_post(
            &format!("apps/{}/app-roles", demo::CONFIDENTIAL_APP_ID),
            json!({"resource": "00000002-0000-0ff1-ce00-000000000000", "roles": ["IMAP.AccessAsApp"]}),
        )
        .await
        .assert_ok();
    let token = client_credentials().await;
    assert_eq!(
        crate::common::claims(token.assert_ok()["access_token"].as_str().unwrap())["roles"],
        json!(["IMAP.AccessAsApp"])
    );

    let expired = sandbox
        .admin_post(
            &format!("apps/{}/secrets/expire", demo::CONFIDENTIAL_APP_ID),
            json!({"secret_id": demo::CONFIDENTIAL_APP_SECRET_ID}),
        )
        .await;
    assert_eq!(expired.assert_ok()["expired"], 1);
    client_credentials()
        .await
        .assert_error(401, "invalid_client", 7000222);

    sandbox
        .admin_post(
            &format!("apps/{}/enabled", demo::CONFIDENTIAL_APP_ID),
            json!({"enabled": false}),
        )
        .await
        .assert_ok();
    client_credentials()
        .await
        .assert_error(400, "unauthorized_client", 7000112);
}

#[tokio::test]
async fn consent_changes_over_http() {
    let sandbox = start().await;
    let ropc = || sandbox.user_ropc(demo::NO_CONSENT_APP_ID, demo::IMAP_SCOPE);
    ropc().await.assert_error(400, "invalid_grant", 65001);
    // One user's own consent covers that user only.
    sandbox
        .admin_post(
            &format!("apps/{}/consent", demo::NO_CONSENT_APP_ID),
            json!({"resource": "https://outlook.office.com", "scopes": ["IMAP.AccessAsUser.All"], "user": demo::USER_UPN}),
        )
        .await
        .assert_ok();
    ropc().await.assert_ok();
    sandbox
        .ropc(
            demo::NO_CONSENT_APP_ID,
            demo::SECOND_USER_UPN,
            demo::SECOND_USER_PASSWORD,
            demo::IMAP_SCOPE,
        )
        .await
        .assert_error(400, "invalid_grant", 65001);
    let removed = sandbox
        .admin_post(
            &format!("apps/{}/consent/revoke", demo::NO_CONSENT_APP_ID),
            json!({"user": demo::USER_UPN}),
        )
        .await;
    assert_eq!(removed.assert_ok()["removed"], 1);
    ropc().await.assert_error(400, "invalid_grant", 65001);
}

#[tokio::test]
async fn device_codes_can_be_listed_approved_and_declined_over_http() {
    let sandbox = start().await;
    let user_code = sandbox.start_device_flow().await["user_code"]
        .as_str()
        .unwrap()
        .to_string();
    let pending = sandbox.get_json("_sandbox/admin/device-codes").await;
    assert_eq!(pending.assert_ok()[0]["user_code"], user_code.as_str());
    assert!(
        pending.body[0].get("device_code").is_none(),
        "the secret device code is not listed"
    );

    let declined = sandbox
        .admin_post(&format!("device-codes/{user_code}/decline"), json!({}))
        .await;
    assert_eq!(declined.assert_ok()["status"], "declined");
    let again = sandbox
        .admin_post(
            &format!("device-codes/{user_code}/approve"),
            json!({"username": demo::USER_UPN}),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(
        again.body,
        json!({"error": "conflict", "message": "conflict: the device code was already approved or declined"})
    );
    let missing = sandbox
        .admin_post(
            "device-codes/NOSUCH/approve",
            json!({"username": demo::USER_UPN}),
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body,
        json!({"error": "not_found", "message": "device code not found: NOSUCH"})
    );
    assert_eq!(
        sandbox.get_json("_sandbox/admin/device-codes").await.body,
        json!([])
    );
}

#[tokio::test]
async fn user_revocation_over_http() {
    let sandbox = start().await;
    let body = sandbox
        .user_ropc(
            demo::PUBLIC_APP_ID,
            "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
        )
        .await
        .assert_ok()
        .clone();
    let revoked = sandbox
        .admin_post(
            &format!("users/{}/revoke-refresh-tokens", demo::USER_UPN),
            json!({}),
        )
        .await;
    assert_eq!(revoked.assert_ok()["revoked"], 1);
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("refresh_token", body["refresh_token"].as_str().unwrap()),
                ("scope", demo::IMAP_SCOPE),
            ],
        )
        .await
        .assert_error(400, "invalid_grant", 50173);
}

#[tokio::test]
async fn injected_faults_answer_the_next_token_requests_then_stop() {
    let sandbox = start().await;
    let client_credentials = || {
        sandbox
            .http
            .post(sandbox.token_url(demo::TENANT_ID))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", demo::CONFIDENTIAL_APP_ID),
                ("client_secret", demo::CONFIDENTIAL_APP_SECRET),
                ("scope", demo::EXCHANGE_APP_SCOPE),
            ])
    };
    sandbox
        .admin_post(
            "faults/token",
            json!({"kind": "throttled", "retry_after_seconds": 7, "count": 2}),
        )
        .await
        .assert_ok();
    for _ in 0..2 {
        let response = client_credentials().send().await.unwrap();
        assert_eq!(response.headers()["retry-after"], "7");
        crate::common::answer(response)
            .await
            .assert_error(429, "temporarily_unavailable", 90055);
    }
    crate::common::answer(client_credentials().send().await.unwrap())
        .await
        .assert_ok();

    // Not a refusal: the next token lives as long as asked, the one after as usual.
    sandbox
        .admin_post(
            "faults/token",
            json!({"kind": "short_lived", "lifetime_seconds": 5}),
        )
        .await
        .assert_ok();
    let short = crate::common::answer(client_credentials().send().await.unwrap()).await;
    let short = short.assert_ok();
    assert_eq!(short["expires_in"], 5);
    let claims = crate::common::claims(short["access_token"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        5
    );
    let usual = crate::common::answer(client_credentials().send().await.unwrap()).await;
    assert!(usual.assert_ok()["expires_in"].as_u64().unwrap() >= 3600);

    let admin = sandbox.sandbox.admin();
    admin.inject_token_faults(
        m365mail_sandbox::admin::TokenFault::TemporarilyUnavailable,
        1,
    );
    crate::common::answer(client_credentials().send().await.unwrap())
        .await
        .assert_error(503, "temporarily_unavailable", 50033);
    admin.inject_token_faults(m365mail_sandbox::admin::TokenFault::ServerError, 5);
    crate::common::answer(client_credentials().send().await.unwrap())
        .await
        .assert_error(500, "server_error", 90006);
    sandbox
        .admin_post("faults/clear", json!({}))
        .await
        .assert_ok();
    crate::common::answer(client_credentials().send().await.unwrap())
        .await
        .assert_ok();
    // Faulted requests are still counted: a client's retries are visible.
    assert_eq!(admin.stats().grant("client_credentials"), 8);
}

#[tokio::test]
async fn token_answers_are_not_cacheable_and_echo_the_client_request_id() {
    let sandbox = start().await;
    let request_id = "0b0e0e0f-1234-4abc-8def-0123456789ab";
    let response = sandbox
        .http
        .post(sandbox.token_url(demo::TENANT_ID))
        .header("client-request-id", request_id)
        .form(&[
            ("grant_type", "password"),
            ("client_id", demo::PUBLIC_APP_ID),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store, no-cache");
    assert_eq!(response.headers()["pragma"], "no-cache");
    assert_eq!(response.headers()["client-request-id"], request_id);
    let answer = crate::common::answer(response).await;
    answer.assert_error(400, "invalid_request", 900144);
    assert_eq!(answer.body["correlation_id"], request_id);
    assert!(
        answer.body["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("Correlation ID: {request_id}"))
    );
}

#[tokio::test]
async fn an_unknown_admin_route_answers_json_404() {
    let sandbox = start().await;
    for path in [
        "nope",
        "users/adele@contoso.onmicrosoft.com/frobnicate",
        "stats/extra",
    ] {
        let answer = sandbox.admin_post(path, json!({})).await;
        assert_eq!(answer.status, 404, "{path}: {:?}", answer.body);
        assert_eq!(answer.body["error"], "not_found", "{path}");
        let message = answer.body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("POST /_sandbox/admin/{path}")),
            "{message}"
        );
    }
    let answer = sandbox.get_json("_sandbox/admin").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["error"], "not_found");
}
