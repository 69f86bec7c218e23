//! Entra's smart lockout (reference §6, AADSTS50053): failed password sign-ins in a row lock the
//! account for a while; the lock ends on the injected clock.

use std::{sync::Arc, time::Duration};

use m365mail_sandbox::{FakeClock, SandboxConfig, SmartLockout, demo};
use serde_json::json;

use crate::common::{TestSandbox, start_with};

async fn start_with_lockout(lockout: SmartLockout) -> (TestSandbox, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new(m365mail_sandbox::Clock::now(
        &m365mail_sandbox::SystemClock,
    )));
    let sandbox = start_with(SandboxConfig {
        clock: clock.clone(),
        smart_lockout: lockout,
        ..SandboxConfig::default()
    })
    .await;
    (sandbox, clock)
}

async fn wrong_password(sandbox: &TestSandbox, upn: &str) -> crate::common::Answer {
    sandbox
        .ropc(
            demo::PUBLIC_APP_ID,
            upn,
            "not-the-password",
            demo::IMAP_SCOPE,
        )
        .await
}

#[test]
fn entra_defaults_ten_failures_and_sixty_seconds() {
    assert_eq!(
        SandboxConfig::default().smart_lockout,
        SmartLockout {
            threshold: 10,
            duration: Duration::from_secs(60),
        }
    );
}

#[tokio::test]
async fn ten_failed_passwords_in_a_row_lock_the_account_for_sixty_seconds() {
    let (sandbox, clock) = start_with_lockout(SmartLockout::default()).await;
    let right_password = || sandbox.user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE);
    // Nine failures, then a success: the count starts again.
    for _ in 0..9 {
        wrong_password(&sandbox, demo::USER_UPN)
            .await
            .assert_error(400, "invalid_grant", 50126);
    }
    right_password().await.assert_ok();
    for _ in 0..10 {
        wrong_password(&sandbox, demo::USER_UPN)
            .await
            .assert_error(400, "invalid_grant", 50126);
    }
    // Locked: even the right password is refused, and only this account is.
    right_password()
        .await
        .assert_error(400, "invalid_grant", 50053);
    sandbox
        .ropc(
            demo::PUBLIC_APP_ID,
            demo::SECOND_USER_UPN,
            demo::SECOND_USER_PASSWORD,
            demo::IMAP_SCOPE,
        )
        .await
        .assert_ok();
    clock.advance(Duration::from_secs(59));
    right_password()
        .await
        .assert_error(400, "invalid_grant", 50053);
    clock.advance(Duration::from_secs(1));
    right_password().await.assert_ok();
    // After the lock, one failure is just a failure again.
    wrong_password(&sandbox, demo::USER_UPN)
        .await
        .assert_error(400, "invalid_grant", 50126);
    right_password().await.assert_ok();
}

#[tokio::test]
async fn the_threshold_and_duration_are_configurable_and_sign_in_pages_count_too() {
    let (sandbox, clock) = start_with_lockout(SmartLockout {
        threshold: 3,
        duration: Duration::from_secs(300),
    })
    .await;
    wrong_password(&sandbox, demo::USER_UPN)
        .await
        .assert_error(400, "invalid_grant", 50126);
    // A wrong password on the device-login page is a failed sign-in as well.
    let user_code = sandbox.start_device_flow().await["user_code"]
        .as_str()
        .unwrap()
        .to_string();
    let page = |password: &'static str| {
        sandbox
            .http
            .post(sandbox.url("devicelogin"))
            .form(&[
                ("user_code", user_code.as_str()),
                ("username", demo::USER_UPN),
                ("password", password),
                ("action", "approve"),
            ])
            .send()
    };
    let refused = page("not-the-password").await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("AADSTS50126"));
    wrong_password(&sandbox, demo::USER_UPN)
        .await
        .assert_error(400, "invalid_grant", 50126);
    // Three in a row: locked for 300 seconds, on the page too.
    let locked = page(demo::USER_PASSWORD).await.unwrap();
    assert_eq!(locked.status(), 400);
    assert!(locked.text().await.unwrap().contains("AADSTS50053"));
    clock.advance(Duration::from_secs(299));
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 50053);
    clock.advance(Duration::from_secs(1));
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_ok();
    let approved = page(demo::USER_PASSWORD).await.unwrap();
    assert_eq!(approved.status(), 200);
}

#[tokio::test]
async fn a_threshold_of_zero_turns_smart_lockout_off() {
    let (sandbox, _clock) = start_with_lockout(SmartLockout {
        threshold: 0,
        duration: Duration::from_secs(60),
    })
    .await;
    for _ in 0..25 {
        wrong_password(&sandbox, demo::USER_UPN)
            .await
            .assert_error(400, "invalid_grant", 50126);
    }
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_ok();
}

#[tokio::test]
async fn an_admin_unlock_ends_a_smart_lockout() {
    let (sandbox, _clock) = start_with_lockout(SmartLockout::default()).await;
    for _ in 0..10 {
        wrong_password(&sandbox, demo::USER_UPN)
            .await
            .assert_error(400, "invalid_grant", 50126);
    }
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 50053);
    sandbox
        .admin_post(
            &format!("users/{}", demo::USER_UPN),
            json!({"locked": false}),
        )
        .await
        .assert_ok();
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, demo::IMAP_SCOPE)
        .await
        .assert_ok();
}
