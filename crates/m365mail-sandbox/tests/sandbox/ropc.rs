use m365mail_sandbox::demo;

use crate::common::{claims, header, start, user_ropc_form};

const IMAP_AND_SMTP: &str = "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access";

#[tokio::test]
async fn ropc_issues_a_delegated_exchange_token_with_only_requested_consented_scopes() {
    let sandbox = start().await;
    let answer = sandbox.user_ropc(demo::PUBLIC_APP_ID, IMAP_AND_SMTP).await;
    let body = answer.assert_ok();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["scope"],
        "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access"
    );
    // Entra's default lifetime: random between 60 and 90 minutes.
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((3600..=5400).contains(&expires_in), "{expires_in}");
    assert_eq!(body["ext_expires_in"], expires_in);
    assert!(body["refresh_token"].as_str().unwrap().starts_with("1.AV"));
    assert!(body.get("id_token").is_none(), "no openid, no id_token");
    assert!(
        body.get("client_info").is_none(),
        "no client_info=1, no client_info"
    );

    let access_token = body["access_token"].as_str().unwrap();
    let header = header(access_token);
    assert_eq!(header["alg"], "RS256");
    assert!(header["kid"].is_string() && header["x5t"].is_string());
    let claims = sandbox.verified_claims(access_token).await;
    assert_eq!(claims["aud"], "https://outlook.office.com");
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{}/", demo::TENANT_ID)
    );
    assert_eq!(claims["tid"], demo::TENANT_ID);
    assert_eq!(claims["oid"], demo::USER_OBJECT_ID);
    assert_eq!(claims["upn"], demo::USER_UPN);
    assert_eq!(claims["unique_name"], demo::USER_UPN);
    assert_eq!(claims["scp"], "IMAP.AccessAsUser.All SMTP.Send");
    assert_eq!(claims["appid"], demo::PUBLIC_APP_ID);
    assert_eq!(claims["app_displayname"], demo::PUBLIC_APP_NAME);
    assert_eq!(claims["idtyp"], "user");
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(claims["appidacr"], "0");
    assert!(claims.get("roles").is_none());
    let issued_at = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["nbf"].as_u64().unwrap(), issued_at);
    assert_eq!(claims["exp"].as_u64().unwrap(), issued_at + expires_in);
    let uti = claims["uti"].as_str().unwrap();
    assert_eq!(uti.len(), 22, "{uti}");
    assert!(
        uti.bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'),
        "base64url alphabet: {uti}"
    );
}

#[tokio::test]
async fn openid_and_client_info_add_an_id_token_and_account_identifiers() {
    let sandbox = start().await;
    let answer = sandbox
        .token(
            demo::DOMAIN,
            &[
                ("grant_type", "password"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("username", demo::USER_UPN),
                ("password", demo::USER_PASSWORD),
                ("scope", "https://outlook.office.com/IMAP.AccessAsUser.All openid profile offline_access"),
                ("client_info", "1"),
            ],
        )
        .await;
    let body = answer.assert_ok();
    let id_token = sandbox
        .verified_claims(body["id_token"].as_str().unwrap())
        .await;
    assert_eq!(id_token["aud"], demo::PUBLIC_APP_ID);
    assert_eq!(
        id_token["iss"],
        format!("{}{}/v2.0", sandbox.sandbox.base_url(), demo::TENANT_ID)
    );
    assert_eq!(id_token["oid"], demo::USER_OBJECT_ID);
    assert_eq!(id_token["tid"], demo::TENANT_ID);
    assert_eq!(id_token["preferred_username"], demo::USER_UPN);
    assert_eq!(id_token["name"], demo::USER_DISPLAY_NAME);
    let client_info =
        crate::common::claims(&format!("x.{}.y", body["client_info"].as_str().unwrap()));
    assert_eq!(
        client_info,
        serde_json::json!({"uid": demo::USER_OBJECT_ID, "utid": demo::TENANT_ID})
    );
}

#[tokio::test]
async fn graph_short_scopes_give_a_graph_token() {
    let sandbox = start().await;
    let answer = sandbox.user_ropc(demo::PUBLIC_APP_ID, "User.Read").await;
    let body = answer.assert_ok();
    assert_eq!(body["scope"], "User.Read");
    let claims = claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["scp"], "User.Read");
}

#[tokio::test]
async fn default_scope_gives_every_consented_scope_of_the_resource() {
    let sandbox = start().await;
    let answer = sandbox
        .user_ropc(demo::PUBLIC_APP_ID, "https://outlook.office.com/.default")
        .await;
    let claims = claims(answer.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(
        claims["scp"],
        "IMAP.AccessAsUser.All POP.AccessAsUser.All SMTP.Send"
    );
}

#[tokio::test]
async fn confidential_client_can_use_ropc_with_its_secret() {
    let sandbox = start().await;
    let answer = sandbox
        .user_ropc_with(
            demo::CONFIDENTIAL_APP_ID,
            demo::IMAP_SCOPE,
            &[("client_secret", demo::CONFIDENTIAL_APP_SECRET)],
        )
        .await;
    let claims = claims(answer.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(claims["appidacr"], "1");
    // Without its secret the confidential app is refused.
    sandbox
        .user_ropc(demo::CONFIDENTIAL_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 7000218);
}

#[tokio::test]
async fn ropc_user_errors_carry_entra_codes() {
    let sandbox = start().await;
    let cases: [(&str, &str, &str, u32); 6] = [
        (demo::USER_UPN, "wrong password", "invalid_grant", 50126),
        (
            "nobody@contoso.onmicrosoft.com",
            "x",
            "invalid_grant",
            50034,
        ),
        (
            demo::DISABLED_USER_UPN,
            demo::DISABLED_USER_PASSWORD,
            "invalid_grant",
            50057,
        ),
        (
            demo::LOCKED_USER_UPN,
            demo::LOCKED_USER_PASSWORD,
            "invalid_grant",
            50053,
        ),
        (
            demo::EXPIRED_PASSWORD_USER_UPN,
            demo::EXPIRED_PASSWORD_USER_PASSWORD,
            "invalid_grant",
            50055,
        ),
        (
            demo::MFA_USER_UPN,
            demo::MFA_USER_PASSWORD,
            "invalid_grant",
            50076,
        ),
    ];
    for (username, password, error, code) in cases {
        let answer = sandbox
            .ropc(demo::PUBLIC_APP_ID, username, password, demo::IMAP_SCOPE)
            .await;
        answer.assert_error(400, error, code);
    }
    let expired = sandbox
        .ropc(
            demo::PUBLIC_APP_ID,
            demo::EXPIRED_PASSWORD_USER_UPN,
            demo::EXPIRED_PASSWORD_USER_PASSWORD,
            demo::IMAP_SCOPE,
        )
        .await;
    assert_eq!(expired.body["suberror"], "user_password_expired");
    assert_eq!(
        expired.body["password_change_url"],
        sandbox.url("ChangePassword.aspx")
    );
    let mfa = sandbox
        .ropc(
            demo::PUBLIC_APP_ID,
            demo::MFA_USER_UPN,
            demo::MFA_USER_PASSWORD,
            demo::IMAP_SCOPE,
        )
        .await;
    assert_eq!(mfa.body["suberror"], "basic_action");
    let claims: serde_json::Value =
        serde_json::from_str(mfa.body["claims"].as_str().unwrap()).unwrap();
    assert_eq!(claims["access_token"]["capolids"]["essential"], true);
}

#[tokio::test]
async fn ropc_app_errors_carry_entra_codes() {
    let sandbox = start().await;
    let consent = sandbox
        .user_ropc(demo::NO_CONSENT_APP_ID, demo::IMAP_SCOPE)
        .await;
    consent.assert_error(400, "invalid_grant", 65001);
    assert_eq!(consent.body["suberror"], "consent_required");

    for (client_id, status, error, code) in [
        (demo::NO_PUBLIC_FLOWS_APP_ID, 401, "invalid_client", 7000218),
        (demo::DISABLED_APP_ID, 400, "unauthorized_client", 7000112),
        (
            "11111111-2222-3333-4444-555555555555",
            400,
            "unauthorized_client",
            700016,
        ),
    ] {
        sandbox
            .user_ropc(client_id, demo::IMAP_SCOPE)
            .await
            .assert_error(status, error, code);
    }

    // A public client must not send a secret.
    sandbox
        .user_ropc_with(
            demo::PUBLIC_APP_ID,
            demo::IMAP_SCOPE,
            &[("client_secret", "anything")],
        )
        .await
        .assert_error(401, "invalid_client", 700025);
}

#[tokio::test]
async fn ropc_scope_errors_carry_entra_codes() {
    let sandbox = start().await;
    let ropc = |scope: &'static str| sandbox.user_ropc(demo::PUBLIC_APP_ID, scope);
    ropc("https://outlook.office.com/IMAP.AccessAsUser.All https://graph.microsoft.com/User.Read")
        .await
        .assert_error(400, "invalid_scope", 700022);
    ropc("https://outlook.office.com/NoSuch.Permission")
        .await
        .assert_error(400, "invalid_scope", 70011);
    ropc("https://unknown.example.com/Thing.Read")
        .await
        .assert_error(400, "invalid_resource", 500011);
    // Defined by the resource but never consented.
    ropc("https://outlook.office.com/EWS.AccessAsUser.All")
        .await
        .assert_error(400, "invalid_grant", 65001);
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "password"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("username", demo::USER_UPN),
                ("password", demo::USER_PASSWORD),
            ],
        )
        .await
        .assert_error(400, "invalid_request", 900144);
}

#[tokio::test]
async fn ropc_follows_the_tenant_segment_rules() {
    let sandbox = start().await;
    let form = |client_id: &'static str| user_ropc_form(client_id, demo::IMAP_SCOPE, &[]);
    sandbox
        .token("organizations", &form(demo::PUBLIC_APP_ID))
        .await
        .assert_ok();
    for alias in ["common", "consumers"] {
        sandbox
            .token(alias, &form(demo::PUBLIC_APP_ID))
            .await
            .assert_error(400, "invalid_request", 9001023);
    }
}

#[tokio::test]
async fn federated_users_cannot_use_ropc() {
    let sandbox = start().await;
    sandbox
        .sandbox
        .admin()
        .update_user(
            demo::SECOND_USER_UPN,
            m365mail_sandbox::admin::UserUpdate {
                federated: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    sandbox
        .ropc(
            demo::PUBLIC_APP_ID,
            demo::SECOND_USER_UPN,
            demo::SECOND_USER_PASSWORD,
            demo::IMAP_SCOPE,
        )
        .await
        .assert_error(400, "invalid_grant", 50126);
}

#[tokio::test]
async fn lifetimes_too_large_for_the_clock_saturate_instead_of_overflowing() {
    // e.g. `m365mail sandbox serve --access-token-lifetime 18446744073709551615`.
    let forever = std::time::Duration::from_secs(u64::MAX);
    let sandbox = crate::common::start_with(m365mail_sandbox::SandboxConfig {
        lifetimes: m365mail_sandbox::Lifetimes {
            access_token: m365mail_sandbox::AccessTokenLifetime::Fixed(forever),
            refresh_token: forever,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let answer = sandbox
        .user_ropc(demo::PUBLIC_APP_ID, &format!("{IMAP_AND_SMTP} openid"))
        .await;
    let body = answer.assert_ok();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["exp"],
        u64::MAX
    );
    assert_eq!(claims(body["id_token"].as_str().unwrap())["exp"], u64::MAX);
    let refresh_token = body["refresh_token"].as_str().unwrap().to_string();
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("refresh_token", &refresh_token),
            ],
        )
        .await
        .assert_ok();
}

/// The `expires_in` of a token response, checked against the token's own `exp` and `iat`.
fn lifetime_of(body: &serde_json::Value) -> u64 {
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert_eq!(body["ext_expires_in"], expires_in);
    let claims = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        expires_in
    );
    if let Some(id_token) = body["id_token"].as_str() {
        assert_eq!(crate::common::claims(id_token)["exp"], claims["exp"]);
    }
    expires_in
}

#[tokio::test]
async fn access_tokens_live_a_random_60_to_90_minutes_by_default() {
    assert_eq!(
        m365mail_sandbox::Lifetimes::default().access_token,
        m365mail_sandbox::AccessTokenLifetime::Random {
            min: std::time::Duration::from_secs(3600),
            max: std::time::Duration::from_secs(5400),
        }
    );
    let sandbox = start().await;
    let mut lifetimes = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let answer = sandbox
            .user_ropc(demo::PUBLIC_APP_ID, &format!("{IMAP_AND_SMTP} openid"))
            .await;
        let expires_in = lifetime_of(answer.assert_ok());
        assert!((3600..=5400).contains(&expires_in), "{expires_in}");
        lifetimes.insert(expires_in);
    }
    // 20 draws from 1801 values: all equal has a chance of about 1 in 10^62.
    assert!(lifetimes.len() > 1, "{lifetimes:?}");
}

#[tokio::test]
async fn a_configured_access_token_lifetime_is_fixed() {
    let sandbox = crate::common::start_with(m365mail_sandbox::SandboxConfig {
        lifetimes: m365mail_sandbox::Lifetimes {
            access_token: m365mail_sandbox::AccessTokenLifetime::Fixed(
                std::time::Duration::from_secs(1234),
            ),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    for _ in 0..5 {
        let answer = sandbox
            .user_ropc(demo::PUBLIC_APP_ID, &format!("{IMAP_AND_SMTP} openid"))
            .await;
        assert_eq!(lifetime_of(answer.assert_ok()), 1234);
        let app_only = sandbox
            .token(
                demo::TENANT_ID,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", demo::CONFIDENTIAL_APP_ID),
                    ("client_secret", demo::CONFIDENTIAL_APP_SECRET),
                    ("scope", demo::EXCHANGE_APP_SCOPE),
                ],
            )
            .await;
        assert_eq!(lifetime_of(app_only.assert_ok()), 1234);
    }
}
