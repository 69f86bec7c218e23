//! Transient faults injected by the sandbox (429 + Retry-After, 503, 500): bounded retries through the
//! injected sleeper, Retry-After honoured, and the class of the final error.

use std::sync::Arc;
use std::time::Duration;

use m365mail::auth::{
    Access, Authority, ClientCredential, ClientOptions, Cloud, ErrorClass, Scopes, Target,
    TokenClient,
};
use m365mail::time::FakeClock;
use m365mail_sandbox::admin::TokenFault;
use m365mail_sandbox::{Sandbox, SandboxConfig, demo};

async fn setup() -> (Sandbox, TokenClient, FakeClock) {
    let sbx = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let clock = FakeClock::fixed();
    let a = Authority::new(
        Cloud::custom(sbx.base_url().as_str()).unwrap(),
        demo::TENANT_ID.parse().unwrap(),
    );
    let c = TokenClient::new(
        a,
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        ClientOptions {
            extra_ca_pem: Some(sbx.ca_pem().to_owned()),
            sleeper: Arc::new(clock.clone()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    (sbx, c, clock)
}

fn imap() -> Scopes {
    Scopes::for_target(Target::Imap, Access::Delegated, &Cloud::Global)
}

#[tokio::test]
async fn throttling_honours_retry_after_then_succeeds() {
    let (sbx, c, clock) = setup().await;
    sbx.admin().inject_token_faults(
        TokenFault::Throttled {
            retry_after_seconds: 3,
        },
        1,
    );
    c.password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_secs(3)]);
    assert_eq!(sbx.admin().stats().grant("password"), 2);
}

#[tokio::test]
async fn unavailable_without_retry_after_is_not_retried_for_a_password() {
    let (sbx, c, clock) = setup().await;
    sbx.admin()
        .inject_token_faults(TokenFault::TemporarilyUnavailable, 1);
    let e = c
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(clock.sleeps().is_empty());
    assert_eq!(sbx.admin().stats().grant("password"), 1);
}

#[tokio::test]
async fn unavailable_then_success_uses_backoff_for_client_credentials() {
    let (sbx, _, clock) = setup().await;
    let c = confidential(&sbx, &clock);
    sbx.admin()
        .inject_token_faults(TokenFault::TemporarilyUnavailable, 1);
    c.client_credentials(&app()).await.unwrap();
    assert_eq!(clock.sleeps(), vec![Duration::from_millis(500)]);
}

#[tokio::test]
async fn persistent_server_error_gives_up_after_bounded_retries() {
    let (sbx, _, clock) = setup().await;
    let c = confidential(&sbx, &clock);
    sbx.admin().inject_token_faults(TokenFault::ServerError, 10);
    let e = c.client_credentials(&app()).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(e.class(), ErrorClass::Transient);
    let entra = e.entra().unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(
        (entra.http_status, entra.error.as_str(), &entra.error_codes),
        (500, "server_error", &vec![90006])
    );
    assert_eq!(clock.sleeps().len(), 2);
    assert_eq!(sbx.admin().stats().grant("client_credentials"), 3);
    sbx.admin().clear_token_faults();
    c.client_credentials(&app()).await.unwrap();
}

fn app() -> Scopes {
    Scopes::parse(demo::GRAPH_APP_SCOPE)
}

fn confidential(sbx: &Sandbox, clock: &FakeClock) -> TokenClient {
    let a = Authority::new(
        Cloud::custom(sbx.base_url().as_str()).unwrap(),
        demo::TENANT_ID.parse().unwrap(),
    );
    TokenClient::new(
        a,
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(demo::CONFIDENTIAL_APP_SECRET.into()),
        ClientOptions {
            extra_ca_pem: Some(sbx.ca_pem().to_owned()),
            sleeper: Arc::new(clock.clone()),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}
