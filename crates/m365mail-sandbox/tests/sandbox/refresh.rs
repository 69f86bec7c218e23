use std::time::Duration;

use m365mail_sandbox::{Lifetimes, demo};

use crate::common::{TestSandbox, claims, start, start_with_fake_clock};

async fn refresh_token_for(sandbox: &TestSandbox) -> String {
    let answer = sandbox
        .user_ropc(
            demo::PUBLIC_APP_ID,
            "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
        )
        .await;
    answer.assert_ok()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn refresh(sandbox: &TestSandbox, refresh_token: &str, scope: &str) -> crate::common::Answer {
    refresh_with(
        sandbox,
        demo::PUBLIC_APP_ID,
        &[("refresh_token", refresh_token), ("scope", scope)],
    )
    .await
}

/// A refresh-token grant by `client_id` with `fields` (token, scope, secret) after the client ID.
async fn refresh_with(
    sandbox: &TestSandbox,
    client_id: &str,
    fields: &[(&str, &str)],
) -> crate::common::Answer {
    let mut form = vec![("grant_type", "refresh_token"), ("client_id", client_id)];
    form.extend_from_slice(fields);
    sandbox.token(demo::TENANT_ID, &form).await
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_stays_valid() {
    let sandbox = start().await;
    let original = refresh_token_for(&sandbox).await;
    let scope = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access";
    let (first, second) = tokio::join!(
        refresh(&sandbox, &original, scope),
        refresh(&sandbox, &original, scope)
    );
    let first = first.assert_ok().clone();
    let second = second.assert_ok().clone();
    let first_refresh = first["refresh_token"].as_str().unwrap();
    let second_refresh = second["refresh_token"].as_str().unwrap();
    assert_ne!(first_refresh, original);
    assert_ne!(
        first_refresh, second_refresh,
        "two refreshes in the same second differ"
    );
    assert_ne!(
        first["access_token"], second["access_token"],
        "access tokens differ too (uti)"
    );
    assert_ne!(
        claims(first["access_token"].as_str().unwrap())["uti"],
        claims(second["access_token"].as_str().unwrap())["uti"]
    );
    // Rotation does not revoke: the original and the new ones all still work.
    refresh(&sandbox, &original, scope).await.assert_ok();
    refresh(&sandbox, first_refresh, scope).await.assert_ok();
}

#[tokio::test]
async fn a_refresh_token_can_mint_tokens_for_another_consented_resource() {
    let sandbox = start().await;
    let refresh_token = refresh_token_for(&sandbox).await;
    let graph = refresh(&sandbox, &refresh_token, "User.Read offline_access").await;
    let claims = claims(graph.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["scp"], "User.Read");
}

#[tokio::test]
async fn refresh_without_offline_access_gives_no_new_refresh_token() {
    let sandbox = start().await;
    let refresh_token = refresh_token_for(&sandbox).await;
    let answer = refresh(&sandbox, &refresh_token, demo::IMAP_SCOPE).await;
    assert!(answer.assert_ok().get("refresh_token").is_none());
}

#[tokio::test]
async fn refresh_failures_carry_entra_codes() {
    let sandbox = start().await;
    refresh(&sandbox, "1.AVnot-a-token", demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 70000);
    refresh_with(&sandbox, demo::PUBLIC_APP_ID, &[])
        .await
        .assert_error(400, "invalid_request", 900144);

    // Another client cannot use the token.
    let refresh_token = refresh_token_for(&sandbox).await;
    refresh_with(
        &sandbox,
        demo::NO_CONSENT_APP_ID,
        &[
            ("refresh_token", &refresh_token),
            ("scope", demo::IMAP_SCOPE),
        ],
    )
    .await
    .assert_error(400, "invalid_grant", 70000);

    // A public client must redeem without a secret.
    refresh_with(
        &sandbox,
        demo::PUBLIC_APP_ID,
        &[
            ("client_secret", "x"),
            ("refresh_token", &refresh_token),
            ("scope", demo::IMAP_SCOPE),
        ],
    )
    .await
    .assert_error(401, "invalid_client", 700025);

    // Consent removed after sign-in.
    sandbox
        .sandbox
        .admin()
        .revoke_delegated_consent(
            demo::PUBLIC_APP_ID,
            Some("https://outlook.office.com"),
            None,
        )
        .unwrap();
    refresh(&sandbox, &refresh_token, demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 65001);

    // Disabled after sign-in.
    sandbox
        .sandbox
        .admin()
        .set_user_disabled(demo::USER_UPN, true)
        .unwrap();
    refresh(&sandbox, &refresh_token, "User.Read")
        .await
        .assert_error(400, "invalid_grant", 50057);
}

#[tokio::test]
async fn revocation_and_password_change_give_50173() {
    let sandbox = start().await;
    let revoked = refresh_token_for(&sandbox).await;
    let revoked_count = sandbox
        .sandbox
        .admin()
        .revoke_refresh_tokens(demo::USER_UPN)
        .unwrap();
    assert_eq!(revoked_count, 1);
    refresh(&sandbox, &revoked, demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 50173);

    // Tokens issued after the revocation work.
    let fresh = refresh_token_for(&sandbox).await;
    refresh(&sandbox, &fresh, demo::IMAP_SCOPE)
        .await
        .assert_ok();

    sandbox
        .sandbox
        .admin()
        .set_password(demo::USER_UPN, "New-Password-7!")
        .unwrap();
    refresh(&sandbox, &fresh, demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 50173);
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 50126);
    sandbox
        .ropc(
            demo::PUBLIC_APP_ID,
            demo::USER_UPN,
            "New-Password-7!",
            demo::IMAP_SCOPE,
        )
        .await
        .assert_ok();
}

#[tokio::test]
async fn refresh_tokens_expire_after_their_lifetime() {
    let lifetimes = Lifetimes {
        refresh_token: Duration::from_secs(120),
        ..Lifetimes::default()
    };
    let (sandbox, clock) = start_with_fake_clock(lifetimes).await;
    let refresh_token = refresh_token_for(&sandbox).await;
    clock.advance(Duration::from_secs(60));
    let renewed = refresh(
        &sandbox,
        &refresh_token,
        "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
    )
    .await;
    let renewed = renewed.assert_ok()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    clock.advance(Duration::from_secs(61));
    refresh(&sandbox, &refresh_token, demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 700082);
    // The rotated token has its own, later expiry.
    refresh(&sandbox, &renewed, demo::IMAP_SCOPE)
        .await
        .assert_ok();
}

#[tokio::test]
async fn mfa_required_after_a_password_sign_in_stops_refresh_with_50076() {
    let sandbox = start().await;
    let refresh_token = refresh_token_for(&sandbox).await;
    sandbox
        .sandbox
        .admin()
        .set_mfa_required(demo::USER_UPN, true)
        .unwrap();
    let answer = refresh(&sandbox, &refresh_token, demo::IMAP_SCOPE).await;
    answer.assert_error(400, "invalid_grant", 50076);
    sandbox
        .sandbox
        .admin()
        .set_mfa_required(demo::USER_UPN, false)
        .unwrap();
    refresh(&sandbox, &refresh_token, demo::IMAP_SCOPE)
        .await
        .assert_ok();
}
