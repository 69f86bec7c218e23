use std::time::Duration;

use m365mail_sandbox::{Lifetimes, demo};
use serde_json::json;

use crate::common::{Answer, TestSandbox, claims, start, start_with_fake_clock};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const SCOPE: &str =
    "https://outlook.office.com/IMAP.AccessAsUser.All offline_access openid profile";

async fn start_flow(sandbox: &TestSandbox, tenant: &str, client_id: &str) -> (String, String) {
    let answer = sandbox
        .post_form(
            &sandbox.url(&format!("{tenant}/oauth2/v2.0/devicecode")),
            &[("client_id", client_id), ("scope", SCOPE)],
        )
        .await;
    let body = answer.assert_ok();
    (
        body["device_code"].as_str().unwrap().to_string(),
        body["user_code"].as_str().unwrap().to_string(),
    )
}

async fn poll(sandbox: &TestSandbox, tenant: &str, client_id: &str, device_code: &str) -> Answer {
    sandbox
        .token(
            tenant,
            &[
                ("grant_type", DEVICE_GRANT),
                ("client_id", client_id),
                ("device_code", device_code),
            ],
        )
        .await
}

async fn sign_in_on_page(
    sandbox: &TestSandbox,
    user_code: &str,
    username: &str,
    password: &str,
    action: &str,
) -> (u16, String) {
    let response = sandbox
        .http
        .post(sandbox.url("devicelogin"))
        .form(&[
            ("user_code", user_code),
            ("username", username),
            ("password", password),
            ("action", action),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Approves `user_code` on the device-login page as `username`; the page must refuse it with a 400
/// naming `AADSTS<code>`.
async fn assert_approval_refused(
    sandbox: &TestSandbox,
    user_code: &str,
    username: &str,
    password: &str,
    code: u32,
) {
    let (status, page) = sign_in_on_page(sandbox, user_code, username, password, "approve").await;
    assert_eq!(status, 400, "approval as {username}: {page}");
    assert!(page.contains(&format!("AADSTS{code}")), "{page}");
}

fn fast_lifetimes() -> Lifetimes {
    Lifetimes {
        device_poll_interval: Duration::from_secs(5),
        device_code: Duration::from_secs(900),
        ..Lifetimes::default()
    }
}

#[tokio::test]
async fn device_code_response_has_entra_fields_and_message() {
    let sandbox = start().await;
    let answer = sandbox
        .post_form(
            &sandbox.url(&format!("{}/oauth2/v2.0/devicecode", demo::TENANT_ID)),
            &[("client_id", demo::PUBLIC_APP_ID), ("scope", SCOPE)],
        )
        .await;
    let body = answer.assert_ok();
    let verification_uri = sandbox.url("devicelogin");
    let user_code = body["user_code"].as_str().unwrap();
    assert_eq!(body["verification_uri"], verification_uri);
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["interval"], 5);
    assert_eq!(
        body["message"],
        format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate."
        )
    );
    assert!(body.get("verification_uri_complete").is_none());
    let page = sandbox
        .http
        .get(&verification_uri)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"user_code\""));
}

#[tokio::test]
async fn device_flow_answers_pending_even_to_fast_polls_then_approval_and_reuse() {
    let (sandbox, clock) = start_with_fake_clock(fast_lifetimes()).await;
    let (device_code, user_code) = start_flow(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID).await;
    // Entra answers authorization_pending however fast a client polls (RFC 8628 asks clients to wait
    // `interval`, but Entra has not been seen to send slow_down; it is an injectable fault here).
    for _ in 0..3 {
        poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &device_code)
            .await
            .assert_error(400, "authorization_pending", 70016);
    }
    clock.advance(Duration::from_secs(5));
    poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &device_code)
        .await
        .assert_error(400, "authorization_pending", 70016);

    // The MFA user can use the device flow: MFA happens in the browser.
    let (status, page) = sign_in_on_page(
        &sandbox,
        &user_code.to_lowercase(),
        demo::MFA_USER_UPN,
        demo::MFA_USER_PASSWORD,
        "approve",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    clock.advance(Duration::from_secs(5));
    let answer = poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &device_code).await;
    let body = answer.assert_ok();
    assert!(body["refresh_token"].as_str().unwrap().starts_with("1.AV"));
    assert_eq!(
        claims(body["id_token"].as_str().unwrap())["preferred_username"],
        demo::MFA_USER_UPN
    );
    let claims = claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["upn"], demo::MFA_USER_UPN);
    assert_eq!(claims["amr"], json!(["pwd", "mfa"]));

    clock.advance(Duration::from_secs(5));
    poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &device_code)
        .await
        .assert_error(400, "invalid_grant", 90120);
    // Approving again on the page is refused the same way.
    assert_approval_refused(
        &sandbox,
        &user_code,
        demo::USER_UPN,
        demo::USER_PASSWORD,
        90120,
    )
    .await;
}

#[tokio::test]
async fn slow_down_is_an_injectable_fault_for_device_code_polls_only() {
    let (sandbox, clock) = start_with_fake_clock(fast_lifetimes()).await;
    let (device_code, _) = start_flow(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID).await;
    sandbox
        .admin_post("faults/token", json!({"kind": "slow_down", "count": 2}))
        .await
        .assert_ok();
    // Other grants are not slowed down, and do not use up the fault.
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_ok();
    for _ in 0..2 {
        clock.advance(Duration::from_secs(5));
        poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &device_code)
            .await
            .assert_codeless_error("slow_down");
    }
    poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &device_code)
        .await
        .assert_error(400, "authorization_pending", 70016);
    // The same through the Rust admin handle.
    sandbox
        .sandbox
        .admin()
        .inject_token_faults(m365mail_sandbox::admin::TokenFault::SlowDown, 1);
    poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &device_code)
        .await
        .assert_codeless_error("slow_down");
    poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &device_code)
        .await
        .assert_error(400, "authorization_pending", 70016);
}

/// Some client libraries send the short `device_code` instead of RFC 8628's URN; Entra accepts both.
#[tokio::test]
async fn the_short_device_code_grant_type_is_accepted() {
    let (sandbox, _clock) = start_with_fake_clock(fast_lifetimes()).await;
    let (device_code, user_code) = start_flow(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID).await;
    let form = [
        ("grant_type", "device_code"),
        ("client_id", demo::PUBLIC_APP_ID),
        ("device_code", device_code.as_str()),
    ];
    let short_poll = || sandbox.token(demo::TENANT_ID, &form);
    short_poll()
        .await
        .assert_error(400, "authorization_pending", 70016);
    sandbox
        .sandbox
        .admin()
        .approve_device_code(&user_code, demo::USER_UPN)
        .unwrap();
    let body = short_poll().await.assert_ok().clone();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["upn"],
        demo::USER_UPN
    );
    short_poll().await.assert_error(400, "invalid_grant", 90120);
    let stats = sandbox.sandbox.admin().stats();
    assert_eq!(stats.grant("device_code"), 3);
    assert_eq!(stats.grant(DEVICE_GRANT), 0);
}

#[tokio::test]
async fn device_flow_decline_expiry_and_unknown_codes() {
    let (sandbox, clock) = start_with_fake_clock(fast_lifetimes()).await;
    let (declined, user_code) = start_flow(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID).await;
    let (status, _) = sign_in_on_page(&sandbox, &user_code, "", "", "decline").await;
    assert_eq!(status, 200);
    poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &declined)
        .await
        .assert_codeless_error("authorization_declined");

    let (expiring, _) = start_flow(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID).await;
    clock.advance(Duration::from_secs(901));
    poll(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID, &expiring)
        .await
        .assert_error(400, "expired_token", 70019);

    poll(
        &sandbox,
        demo::TENANT_ID,
        demo::PUBLIC_APP_ID,
        "DAQABAAEAAAnot-a-code",
    )
    .await
    .assert_error(400, "bad_verification_code", 70018);
    assert_approval_refused(
        &sandbox,
        "NOSUCHCODE",
        demo::USER_UPN,
        demo::USER_PASSWORD,
        70018,
    )
    .await;
}

#[tokio::test]
async fn device_login_page_checks_the_password() {
    let (sandbox, _clock) = start_with_fake_clock(fast_lifetimes()).await;
    let (_, user_code) = start_flow(&sandbox, demo::TENANT_ID, demo::PUBLIC_APP_ID).await;
    assert_approval_refused(&sandbox, &user_code, demo::USER_UPN, "wrong", 50126).await;
    assert_approval_refused(
        &sandbox,
        &user_code,
        demo::DISABLED_USER_UPN,
        demo::DISABLED_USER_PASSWORD,
        50057,
    )
    .await;
}

#[tokio::test]
async fn device_flow_app_errors_surface_when_polling() {
    let (sandbox, clock) = start_with_fake_clock(fast_lifetimes()).await;
    let (no_public, _) = start_flow(&sandbox, demo::TENANT_ID, demo::NO_PUBLIC_FLOWS_APP_ID).await;
    poll(
        &sandbox,
        demo::TENANT_ID,
        demo::NO_PUBLIC_FLOWS_APP_ID,
        &no_public,
    )
    .await
    .assert_error(401, "invalid_client", 7000218);

    let (no_consent, user_code) =
        start_flow(&sandbox, demo::TENANT_ID, demo::NO_CONSENT_APP_ID).await;
    sandbox
        .sandbox
        .admin()
        .approve_device_code(&user_code, demo::USER_UPN)
        .unwrap();
    clock.advance(Duration::from_secs(5));
    poll(
        &sandbox,
        demo::TENANT_ID,
        demo::NO_CONSENT_APP_ID,
        &no_consent,
    )
    .await
    .assert_error(400, "invalid_grant", 65001);

    let bad_scope = sandbox
        .post_form(
            &sandbox.url(&format!("{}/oauth2/v2.0/devicecode", demo::TENANT_ID)),
            &[
                ("client_id", demo::PUBLIC_APP_ID),
                ("scope", "https://nowhere.example.com/X.Read"),
            ],
        )
        .await;
    bad_scope.assert_error(400, "invalid_resource", 500011);
    sandbox
        .post_form(
            &sandbox.url(&format!("{}/oauth2/v2.0/devicecode", demo::TENANT_ID)),
            &[("client_id", demo::DISABLED_APP_ID), ("scope", SCOPE)],
        )
        .await
        .assert_error(400, "unauthorized_client", 7000112);
}

#[tokio::test]
async fn device_flow_over_organizations_finds_the_users_tenant() {
    let (sandbox, clock) = start_with_fake_clock(fast_lifetimes()).await;
    let (device_code, user_code) = start_flow(&sandbox, "organizations", demo::PUBLIC_APP_ID).await;
    let approve = sandbox
        .admin_post(
            &format!("device-codes/{user_code}/approve"),
            json!({"username": demo::USER_UPN}),
        )
        .await;
    assert_eq!(approve.assert_ok()["status"], "approved");
    clock.advance(Duration::from_secs(5));
    let answer = poll(&sandbox, "organizations", demo::PUBLIC_APP_ID, &device_code).await;
    assert_eq!(
        claims(answer.assert_ok()["access_token"].as_str().unwrap())["tid"],
        demo::TENANT_ID
    );
}
