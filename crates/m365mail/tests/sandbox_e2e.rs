//! End-to-end tests of every flow against the in-process sandbox tenant (HTTPS with its generated CA).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use m365mail::Secret;
use m365mail::auth::provider::{FlowSource, TokenOrigin};
use m365mail::auth::{
    Access, AssertionAlg, AuthCodeOptions, AuthError, Authority, CacheKey, CertificateCredential,
    ClientCredential, ClientOptions, Cloud, ErrorClass, Flow, Grant, Inspection, RetryPolicy,
    Scopes, Target, Tenant, TokenCache, TokenClient, TokenProvider, TokenResponse, inspect,
};
use m365mail::time::{BoxFuture, Clock, FakeClock, Sleeper, SystemClock};
use m365mail::transport::TransportKind;
use m365mail_sandbox::{Sandbox, SandboxConfig, demo};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts")
}

fn authority(sbx: &Sandbox, tenant: &str) -> Authority {
    Authority::new(
        Cloud::custom(sbx.base_url().as_str()).unwrap(),
        tenant.parse().unwrap(),
    )
}

fn options(sbx: &Sandbox) -> ClientOptions {
    ClientOptions {
        extra_ca_pem: Some(sbx.ca_pem().to_owned()),
        ..ClientOptions::default()
    }
}

fn client(sbx: &Sandbox, client_id: &str, credential: ClientCredential) -> TokenClient {
    TokenClient::new(
        authority(sbx, demo::TENANT_ID),
        client_id,
        credential,
        options(sbx),
    )
    .unwrap()
}

fn public(sbx: &Sandbox) -> TokenClient {
    client(sbx, demo::PUBLIC_APP_ID, ClientCredential::Public)
}

fn confidential(sbx: &Sandbox) -> TokenClient {
    client(
        sbx,
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(demo::CONFIDENTIAL_APP_SECRET.into()),
    )
}

fn imap() -> Scopes {
    Scopes::for_target(Target::Imap, Access::Delegated, &Cloud::Global)
}

fn app_scopes() -> Scopes {
    Scopes::for_target(Target::Imap, Access::AppOnly, &Cloud::Global)
}

fn usable(token: &Secret, protocol: &str) -> bool {
    match inspect(token.expose(), &SystemClock) {
        Inspection::Jwt(info) => info
            .verdicts
            .iter()
            .any(|v| v.protocol == protocol && v.usable),
        Inspection::Opaque { .. } => false,
    }
}

fn codes(e: &AuthError) -> Vec<u32> {
    e.entra().map(|e| e.error_codes.clone()).unwrap_or_default()
}

#[tokio::test]
async fn ropc_public_and_confidential() {
    let sbx = sandbox().await;
    let t = public(&sbx)
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap();
    assert!(
        t.refresh_token.is_some(),
        "offline_access gives a refresh token"
    );
    assert!(usable(&t.access_token, "imap"), "delegated IMAP token");
    assert!(!usable(&t.access_token, "graph-send"));
    let t = confidential(&sbx)
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap();
    assert!(usable(&t.access_token, "imap"));
    // Through the domain and `organizations` too.
    for tenant in [demo::DOMAIN, "organizations"] {
        let c = TokenClient::new(
            authority(&sbx, tenant),
            demo::PUBLIC_APP_ID,
            ClientCredential::Public,
            options(&sbx),
        )
        .unwrap();
        c.password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
            .await
            .unwrap();
    }
    assert_eq!(sbx.admin().stats().grant("password"), 4);
}

#[tokio::test]
async fn ropc_modelled_errors() {
    let sbx = sandbox().await;
    let c = public(&sbx);
    let before = sbx.admin().stats().grant("password");
    let e = c
        .password(demo::USER_UPN, &"wrong-password".into(), &imap())
        .await
        .unwrap_err();
    assert!(e.has_code(50126), "{e}");
    assert_eq!(e.class(), ErrorClass::User);
    assert!(!e.is_transient());
    // Never retried automatically: exactly one request reached the sandbox.
    assert_eq!(sbx.admin().stats().grant("password"), before + 1);
    // The sandbox echoes our client-request-id as the correlation id (as Entra does): a GUID is there.
    let entra = e.entra().unwrap();
    assert_eq!(entra.correlation_id, entra.client_request_id, "{entra:?}");
    assert!(entra.client_request_id.is_some());
    let shown = e.to_string();
    assert!(
        shown.contains("AADSTS50126 InvalidUserNameOrPassword"),
        "{shown}"
    );
    assert!(
        shown.contains("trace ID") && shown.contains("correlation ID"),
        "{shown}"
    );
    assert!(!shown.contains("wrong-password"));

    let cases: [(&str, &str, u32, ErrorClass); 4] = [
        (
            demo::MFA_USER_UPN,
            demo::MFA_USER_PASSWORD,
            50076,
            ErrorClass::SwitchFlow,
        ),
        (
            demo::DISABLED_USER_UPN,
            demo::DISABLED_USER_PASSWORD,
            50057,
            ErrorClass::Admin,
        ),
        (
            demo::LOCKED_USER_UPN,
            demo::LOCKED_USER_PASSWORD,
            50053,
            ErrorClass::User,
        ),
        (
            demo::EXPIRED_PASSWORD_USER_UPN,
            demo::EXPIRED_PASSWORD_USER_PASSWORD,
            50055,
            ErrorClass::User,
        ),
    ];
    for (user, pw, code, class) in cases {
        let e = c.password(user, &pw.into(), &imap()).await.unwrap_err();
        assert!(e.has_code(code), "{user}: expected {code}, got {e}");
        assert_eq!(e.class(), class, "{user}");
    }
    let e = c
        .password(
            demo::EXPIRED_PASSWORD_USER_UPN,
            &demo::EXPIRED_PASSWORD_USER_PASSWORD.into(),
            &imap(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.entra().unwrap().suberror.as_deref(),
        Some("user_password_expired")
    );

    let e = client(&sbx, demo::NO_PUBLIC_FLOWS_APP_ID, ClientCredential::Public)
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap_err();
    assert!(e.has_code(7000218), "{e}");
    assert!(e.remedy().contains("Allow public client flows = Yes"));
    let e = client(&sbx, demo::NO_CONSENT_APP_ID, ClientCredential::Public)
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap_err();
    assert!(e.has_code(65001), "{e}");
    assert_eq!(e.class(), ErrorClass::Admin);

    // Refused locally, before any request.
    let before = sbx.admin().stats().total_requests;
    for tenant in ["common", "consumers"] {
        let c = TokenClient::new(
            authority(&sbx, tenant),
            demo::PUBLIC_APP_ID,
            ClientCredential::Public,
            options(&sbx),
        )
        .unwrap();
        let e = c
            .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AuthError::TenantNotAllowed { grant: Grant::Password, tenant: t } if t == tenant),
            "{e}"
        );
    }
    let e = c
        .password("user@x.com\r\nX: y", &"p".into(), &imap())
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        AuthError::InvalidInput {
            field: "username",
            ..
        }
    ));
    assert_eq!(sbx.admin().stats().total_requests, before);

    // MFA toggled at run time.
    sbx.admin()
        .set_mfa_required(demo::SECOND_USER_UPN, true)
        .unwrap();
    let e = c
        .password(
            demo::SECOND_USER_UPN,
            &demo::SECOND_USER_PASSWORD.into(),
            &imap(),
        )
        .await
        .unwrap_err();
    assert!(e.has_code(50076));
}

/// The error that client credentials for `client_id` with `secret` (posted) fail with.
async fn secret_refusal(sbx: &Sandbox, client_id: &str, secret: &str) -> AuthError {
    client(sbx, client_id, ClientCredential::secret(secret.into()))
        .client_credentials(&app_scopes())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn client_credentials_with_secret_post_and_basic() {
    let sbx = sandbox().await;
    let t = confidential(&sbx)
        .client_credentials(&app_scopes())
        .await
        .unwrap();
    assert!(t.refresh_token.is_none());
    assert!(
        usable(&t.access_token, "imap") && usable(&t.access_token, "smtp"),
        "app-only roles"
    );
    let basic = client(
        &sbx,
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::Secret {
            secret: demo::CONFIDENTIAL_APP_SECRET.into(),
            basic: true,
        },
    );
    let t = basic
        .client_credentials(&Scopes::for_target(
            Target::Graph,
            Access::AppOnly,
            &Cloud::Global,
        ))
        .await
        .unwrap();
    assert!(usable(&t.access_token, "graph-send"));

    // The secret's ID instead of its value.
    let e = secret_refusal(
        &sbx,
        demo::CONFIDENTIAL_APP_ID,
        demo::CONFIDENTIAL_APP_SECRET_ID,
    )
    .await;
    assert!(e.has_code(7000215), "{e}");
    assert!(e.remedy().contains("secret's ID, not its value"));
    let e = secret_refusal(
        &sbx,
        demo::EXPIRED_SECRET_APP_ID,
        demo::EXPIRED_SECRET_APP_SECRET,
    )
    .await;
    assert!(e.has_code(7000222), "{e}");
    // A named scope on client credentials.
    let e = confidential(&sbx)
        .client_credentials(&imap())
        .await
        .unwrap_err();
    assert_eq!(codes(&e), vec![1002012], "{e}");
    assert_eq!(e.entra().unwrap().error, "invalid_scope");
    assert_eq!(e.class(), ErrorClass::Config);
    // A public client has no credential: refused locally.
    assert!(matches!(
        public(&sbx).client_credentials(&app_scopes()).await,
        Err(AuthError::MissingCredential {
            grant: Grant::ClientCredentials
        })
    ));
    // `organizations` is refused before any request.
    let before = sbx.admin().stats().total_requests;
    let c = TokenClient::new(
        authority(&sbx, "organizations"),
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(demo::CONFIDENTIAL_APP_SECRET.into()),
        options(&sbx),
    )
    .unwrap();
    assert!(matches!(
        c.client_credentials(&app_scopes()).await,
        Err(AuthError::TenantNotAllowed { .. })
    ));
    assert_eq!(sbx.admin().stats().total_requests, before);
}

#[tokio::test]
async fn client_credentials_with_certificate_rs256_and_ps256() {
    let sbx = sandbox().await;
    let demo_cert = demo::certificate();
    let cred = Arc::new(
        CertificateCredential::from_pem(
            demo_cert.certificate_pem.as_bytes(),
            &Secret::new(demo_cert.private_key_pem.clone()),
        )
        .unwrap(),
    );
    assert_eq!(cred.x5t(), demo_cert.x5t);
    assert_eq!(cred.x5t_s256(), demo_cert.x5t_s256);
    assert_eq!(cred.thumbprint_hex(), demo_cert.sha1_thumbprint_hex);
    for alg in [AssertionAlg::Rs256, AssertionAlg::Ps256] {
        let c = client(
            &sbx,
            demo::CONFIDENTIAL_APP_ID,
            ClientCredential::Certificate {
                cert: cred.clone(),
                alg,
            },
        );
        let t = c
            .client_credentials(&app_scopes())
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert!(usable(&t.access_token, "imap"), "{alg}");
    }
    // A certificate the app does not know.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let other = rcgen::CertificateParams::new(vec!["other".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let other = Arc::new(
        CertificateCredential::from_pem(other.pem().as_bytes(), &Secret::new(key.serialize_pem()))
            .unwrap(),
    );
    let e = client(
        &sbx,
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::Certificate {
            cert: other,
            alg: AssertionAlg::Rs256,
        },
    )
    .client_credentials(&app_scopes())
    .await
    .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Config, "{e}");
    assert_eq!(codes(&e), vec![700027], "{e}");
    assert_eq!(e.entra().unwrap().error, "invalid_client");
}

/// Sleeps by advancing both the library's and the sandbox's fake clocks, so polling intervals and device
/// code lifetimes pass instantly and consistently on both sides.
#[derive(Debug, Clone)]
struct SyncedSleeper {
    lib: FakeClock,
    sbx: Arc<m365mail_sandbox::FakeClock>,
}

impl Sleeper for SyncedSleeper {
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.sbx.advance(d);
        self.lib.sleep(d)
    }
}

async fn fake_time_sandbox(
    device_code_lifetime: Duration,
) -> (Sandbox, TokenClient, SyncedSleeper) {
    let start = SystemClock.now();
    let sbx_clock = Arc::new(m365mail_sandbox::FakeClock::new(start));
    let mut config = SandboxConfig {
        clock: sbx_clock.clone(),
        ..SandboxConfig::default()
    };
    config.lifetimes.device_code = device_code_lifetime;
    let sbx = Sandbox::start(config).await.unwrap();
    let sleeper = SyncedSleeper {
        lib: FakeClock::new(start),
        sbx: sbx_clock,
    };
    let opts = ClientOptions {
        clock: Arc::new(sleeper.lib.clone()),
        sleeper: Arc::new(sleeper.clone()),
        ..options(&sbx)
    };
    let c = TokenClient::new(
        authority(&sbx, demo::TENANT_ID),
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        opts,
    )
    .unwrap();
    (sbx, c, sleeper)
}

#[tokio::test]
async fn device_code_approve_decline_expire_cancel() {
    let (sbx, c, sleeper) = fake_time_sandbox(Duration::from_secs(900)).await;
    let admin = sbx.admin().clone();
    let shown = Arc::new(Mutex::new(String::new()));
    let shown2 = shown.clone();
    let t = c
        .device_code(
            &imap(),
            move |code| {
                *shown2.lock().unwrap() = code.message.clone();
                admin
                    .approve_device_code(&code.user_code, demo::USER_UPN)
                    .unwrap();
            },
            std::future::pending(),
        )
        .await
        .unwrap();
    assert!(
        shown.lock().unwrap().contains("enter the code"),
        "{}",
        shown.lock().unwrap()
    );
    assert!(usable(&t.access_token, "imap"));
    assert!(t.refresh_token.is_some());
    assert_eq!(
        sleeper.lib.sleeps(),
        vec![Duration::from_secs(5)],
        "waited one interval before the first poll"
    );

    // Pending for a while, then approved from another task: several polls, each after the interval.
    let code = c.start_device_code(&imap()).await.unwrap();
    let polls_before = sbx
        .admin()
        .stats()
        .grant("urn:ietf:params:oauth:grant-type:device_code");
    let admin = sbx.admin().clone();
    let user_code = code.user_code.clone();
    let lib_clock = sleeper.lib.clone();
    let approve_at = lib_clock.now() + Duration::from_secs(30);
    let approver = tokio::spawn(async move {
        while lib_clock.now() < approve_at {
            tokio::task::yield_now().await;
        }
        admin
            .approve_device_code(&user_code, demo::USER_UPN)
            .unwrap();
    });
    c.poll_device_code(&code, std::future::pending())
        .await
        .unwrap();
    approver.await.unwrap();
    let polls = sbx
        .admin()
        .stats()
        .grant("urn:ietf:params:oauth:grant-type:device_code")
        - polls_before;
    assert!(
        polls >= 2,
        "authorization_pending was polled through ({polls} polls)"
    );

    // Declined.
    let admin = sbx.admin().clone();
    let e = c
        .device_code(
            &imap(),
            move |code| admin.decline_device_code(&code.user_code).unwrap(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.entra().map(|e| e.error.as_str()),
        Some("authorization_declined"),
        "{e}"
    );
    assert_eq!(e.class(), ErrorClass::FlowState);

    // Cancelled before the first poll.
    let before = sbx
        .admin()
        .stats()
        .grant("urn:ietf:params:oauth:grant-type:device_code");
    let e = c
        .device_code(&imap(), |_| {}, std::future::ready(()))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Cancelled), "{e:?}");
    assert_eq!(
        sbx.admin()
            .stats()
            .grant("urn:ietf:params:oauth:grant-type:device_code"),
        before
    );
}

#[tokio::test]
async fn device_code_slow_down_from_the_server_is_honoured() {
    let (sbx, c, _sleeper) = fake_time_sandbox(Duration::from_secs(900)).await;
    let code = c.start_device_code(&imap()).await.unwrap();
    // Entra answers fast polls with authorization_pending; the sandbox sends slow_down when told to.
    sbx.admin()
        .inject_token_faults(m365mail_sandbox::admin::TokenFault::SlowDown, 2);
    let first = c.poll_device_code_once(&code).await.unwrap_err();
    assert_eq!(first.entra().unwrap().error, "slow_down", "{first}");
    let second = c.poll_device_code_once(&code).await.unwrap_err();
    assert_eq!(second.entra().unwrap().error, "slow_down", "{second}");
    let mut poller = m365mail::auth::DevicePoller::new(&code);
    poller.on_error(first).unwrap();
    poller.on_error(second).unwrap();
    assert_eq!(poller.interval(), code.interval + Duration::from_secs(10));
    // And the full loop still completes once approved.
    sbx.admin()
        .approve_device_code(&code.user_code, demo::USER_UPN)
        .unwrap();
    c.poll_device_code(&code, std::future::pending())
        .await
        .unwrap();
}

#[tokio::test]
async fn device_code_expires() {
    let (_sbx, c, sleeper) = fake_time_sandbox(Duration::from_secs(60)).await;
    let start = sleeper.lib.now();
    let e = c
        .device_code(&imap(), |_| {}, std::future::pending())
        .await
        .unwrap_err();
    // The last poll, at the deadline, is answered expired_token (the local check stops any later one).
    let entra = e.entra().unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(
        (entra.error.as_str(), &entra.error_codes),
        ("expired_token", &vec![70019])
    );
    assert_eq!(e.class(), ErrorClass::FlowState);
    let waited = sleeper.lib.now().duration_since(start).unwrap();
    assert_eq!(waited, Duration::from_secs(60), "{waited:?}");
}

#[tokio::test]
async fn refresh_rotates_and_revocation_is_classified() {
    let sbx = sandbox().await;
    let c = public(&sbx);
    let first = c
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap();
    let rt1 = first.refresh_token.unwrap();
    let second = c.refresh(&rt1, &imap()).await.unwrap();
    let rt2 = second.refresh_token.expect("rotated refresh token");
    assert_ne!(rt1.expose(), rt2.expose());
    // The same refresh token mints a token for another resource (Graph needs consent: the demo app has User.Read).
    sbx.admin().revoke_refresh_tokens(demo::USER_UPN).unwrap();
    let e = c.refresh(&rt2, &imap()).await.unwrap_err();
    assert!(e.refresh_token_is_dead(), "{e}");
    assert_eq!(codes(&e), vec![50173], "{e}");
    assert_eq!(e.entra().unwrap().error, "invalid_grant");
    assert_eq!(e.class(), ErrorClass::User);
}

#[tokio::test]
async fn auth_code_with_pkce_and_loopback_listener() {
    let sbx = sandbox().await;
    let c = public(&sbx);
    let t = auth_code_in_browser(&c, &sbx, AuthCodeOptions::default(), None)
        .await
        .unwrap();
    assert!(usable(&t.access_token, "imap"));
    assert!(t.refresh_token.is_some());
    assert_eq!(sbx.admin().stats().grant("authorization_code"), 1);

    // An idle connection, a tampered state and an error redirect with a wrong state are each answered on
    // their own (400 for the wrong states) without ending the flow; the genuine redirect then succeeds, and
    // the code is redeemed once.
    let t = auth_code_in_browser(&c, &sbx, timeout(60), Some("forged"))
        .await
        .unwrap();
    assert!(usable(&t.access_token, "imap"));
    assert_eq!(sbx.admin().stats().grant("authorization_code"), 2);

    // Only forged redirects: the flow does not end on them; it times out.
    let e = auth_code_in_browser(&c, &sbx, timeout(3), Some("forged-only"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::Redirect(m) if m == "no redirect within 3 s"),
        "{e}"
    );
    assert_eq!(sbx.admin().stats().grant("authorization_code"), 2);

    // Signed in as someone else than the account asked for: refused, and the browser page says the sign-in
    // failed (not "complete").
    let expect_alex = AuthCodeOptions {
        expected_account: Some(demo::SECOND_USER_UPN.into()),
        ..timeout(60)
    };
    let e = auth_code_in_browser(&c, &sbx, expect_alex, Some(EXPECT_FAILURE))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::AccountMismatch { signed_in, .. } if signed_in == demo::USER_UPN),
        "{e}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !FAILURE_PAGE_SEEN.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        FAILURE_PAGE_SEEN.load(std::sync::atomic::Ordering::SeqCst),
        "the browser did not get a 'Sign-in failed' page"
    );
}

/// `drive_browser`'s mode for a sign-in the client refuses: no forging; the redirect's page must say so.
const EXPECT_FAILURE: &str = "expect-failure";

/// Set by the browser task once it has read a "Sign-in failed" page (a panic in that task would go unseen).
static FAILURE_PAGE_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Auth-code options waiting `seconds` for the redirect.
fn timeout(seconds: u64) -> AuthCodeOptions {
    AuthCodeOptions {
        timeout: Duration::from_secs(seconds),
        ..AuthCodeOptions::default()
    }
}

/// The auth-code flow for IMAP with [`drive_browser`] as the browser (forging `state` when asked).
async fn auth_code_in_browser(
    c: &TokenClient,
    sbx: &Sandbox,
    options: AuthCodeOptions,
    forge_state: Option<&'static str>,
) -> Result<TokenResponse, AuthError> {
    let ca = sbx.ca_pem().to_owned();
    c.auth_code(
        &imap(),
        &options,
        move |url| drive_browser(url.clone(), ca, forge_state),
        std::future::pending(),
    )
    .await
}

/// Acts as the browser: posts the sign-in form (the authorize query + credentials), follows the redirect to
/// the loopback listener, optionally replacing `state`.
fn drive_browser(url: url::Url, ca_pem: String, forge_state: Option<&'static str>) {
    tokio::spawn(async move {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .tls_certs_only([ca])
            .build()
            .unwrap();
        let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        form.push(("username".into(), demo::USER_UPN.into()));
        form.push(("password".into(), demo::USER_PASSWORD.into()));
        let mut post = url.clone();
        post.set_query(None);
        let resp = http.post(post).form(&form).send().await.unwrap();
        assert!(
            resp.status().is_redirection(),
            "sign-in answered {}",
            resp.status()
        );
        // Alternate between the IPv4 and (when the host has it) IPv6 loopback listeners.
        let host = if forge_state.is_none() && std::net::TcpListener::bind("[::1]:0").is_ok() {
            "[::1]"
        } else {
            "127.0.0.1"
        };
        let location = resp.headers()["location"]
            .to_str()
            .unwrap()
            .replace("localhost", host);
        let target = url::Url::parse(&location).unwrap();
        let mut idle = None;
        if forge_state == Some(EXPECT_FAILURE) {
            let page = reqwest::get(target).await.unwrap();
            assert_eq!(page.status(), 400);
            let text = page.text().await.unwrap();
            assert!(text.contains("Sign-in failed:"), "{text}");
            assert!(!text.contains("Sign-in complete"), "{text}");
            FAILURE_PAGE_SEEN.store(true, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        if let Some(forged) = forge_state {
            // An idle connection first: it must not stall the listener.
            let addr = format!("{}:{}", target.host_str().unwrap(), target.port().unwrap());
            idle = Some(tokio::net::TcpStream::connect(addr).await.unwrap());
            let mut tampered = target.clone();
            let pairs: Vec<(String, String)> = target
                .query_pairs()
                .into_owned()
                .map(|(k, v)| {
                    if k == "state" {
                        (k, forged.to_owned())
                    } else {
                        (k, v)
                    }
                })
                .collect();
            tampered.query_pairs_mut().clear().extend_pairs(pairs);
            let page = reqwest::get(tampered).await.unwrap();
            assert_eq!(page.status(), 400);
            // An error redirect without the right state.
            let mut error = target.clone();
            error
                .query_pairs_mut()
                .clear()
                .append_pair("error", "access_denied")
                .append_pair("state", forged);
            let page = reqwest::get(error).await.unwrap();
            assert_eq!(page.status(), 400);
            let mut missing = target.clone();
            missing
                .query_pairs_mut()
                .clear()
                .append_pair("error", "access_denied");
            let page = reqwest::get(missing).await.unwrap();
            assert_eq!(page.status(), 400);
            if forged == "forged-only" {
                return;
            }
        }
        let page = reqwest::get(target).await.unwrap();
        assert_eq!(page.status(), 200);
        let _ = page.text().await;
        drop(idle);
    });
}

#[tokio::test]
async fn provider_reuses_cache_and_saves_rotated_refresh_token() {
    // One-hour tokens, so the clock steps below land inside / past the refresh margin (the
    // sandbox's default is Entra's random 60 to 90 minutes).
    let mut config = SandboxConfig::default();
    config.lifetimes.access_token =
        m365mail_sandbox::AccessTokenLifetime::Fixed(Duration::from_secs(3600));
    let sbx = Sandbox::start(config).await.expect("sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(TokenCache::open(dir.path().join("cache.json")).unwrap());
    let clock = FakeClock::new(SystemClock.now());
    let c = TokenClient::new(
        authority(&sbx, demo::TENANT_ID),
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        ClientOptions {
            clock: Arc::new(clock.clone()),
            ..options(&sbx)
        },
    )
    .unwrap();
    let key = CacheKey::new(c.authority(), c.client_id(), demo::USER_UPN, &imap());
    let source = Arc::new(FlowSource {
        client: c,
        flow: Flow::Password {
            username: demo::USER_UPN.into(),
            password: demo::USER_PASSWORD.into(),
        },
    });
    let p = TokenProvider::new(
        source,
        cache.clone(),
        key.clone(),
        imap(),
        Arc::new(clock.clone()),
    );
    let s0 = sbx.admin().stats();
    let t1 = p.token().await.unwrap();
    assert_eq!(t1.origin, TokenOrigin::Flow);
    let rt1 = cache.get(&key).unwrap().unwrap().refresh_token.unwrap();
    let t2 = p.token().await.unwrap();
    assert_eq!(t2.origin, TokenOrigin::Cache);
    assert_eq!(t1.token.expose(), t2.token.expose());
    let s1 = sbx.admin().stats();
    assert_eq!(s1.grant("password"), s0.grant("password") + 1);
    assert_eq!(
        s1.endpoint("token"),
        s0.endpoint("token") + 1,
        "cache hit made no request"
    );
    // Inside the 5-minute margin: refresh, and the rotated refresh token is saved.
    clock.advance(Duration::from_secs(3600 - 200));
    let t3 = p.token().await.unwrap();
    assert_eq!(t3.origin, TokenOrigin::Refresh);
    let rt2 = cache.get(&key).unwrap().unwrap().refresh_token.unwrap();
    assert_ne!(rt1.expose(), rt2.expose());
    assert_eq!(sbx.admin().stats().grant("refresh_token"), 1);
    // A revoked refresh token falls back to the configured flow.
    sbx.admin().revoke_refresh_tokens(demo::USER_UPN).unwrap();
    clock.advance(Duration::from_secs(3600));
    let t4 = p.token().await.unwrap();
    assert_eq!(t4.origin, TokenOrigin::Flow);
    assert_eq!(
        sbx.admin().stats().grant("password"),
        s0.grant("password") + 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_hundred_callers_one_request() {
    let sbx = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(TokenCache::open(dir.path().join("cache.json")).unwrap());
    let c = confidential(&sbx);
    let key = CacheKey::new(c.authority(), c.client_id(), "app", &app_scopes());
    let source = Arc::new(FlowSource {
        client: c,
        flow: Flow::ClientCredentials,
    });
    let p = Arc::new(TokenProvider::new(
        source,
        cache,
        key,
        app_scopes(),
        Arc::new(SystemClock),
    ));
    let before = sbx.admin().stats().grant("client_credentials");
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.token().await.unwrap() })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    assert_eq!(
        sbx.admin().stats().grant("client_credentials"),
        before + 1,
        "exactly one upstream token request"
    );
    assert!(
        tokens
            .iter()
            .all(|t| t.token.expose() == tokens[0].token.expose())
    );
    assert_eq!(
        tokens
            .iter()
            .filter(|t| t.origin == TokenOrigin::Flow)
            .count(),
        1
    );
    eprintln!("single-flight: 100 concurrent callers served in {elapsed:?} with 1 token request");
    // Warm path: 100 more callers all hit the cache.
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.token().await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().origin, TokenOrigin::Cache);
    }
    eprintln!(
        "cache: 100 concurrent cached reads in {:?}",
        started.elapsed()
    );
    assert_eq!(sbx.admin().stats().grant("client_credentials"), before + 1);
}

#[tokio::test]
async fn transport_errors_are_typed() {
    let sbx = sandbox().await;
    // TLS: the sandbox CA is not trusted.
    let c = TokenClient::new(
        authority(&sbx, demo::TENANT_ID),
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        ClientOptions {
            retry: RetryPolicy {
                max_retries: 0,
                ..RetryPolicy::default()
            },
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let e = c
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::Transport(t) if t.kind() == TransportKind::Tls && t.is_unknown_issuer() && t.endpoint() == authority(&sbx, demo::TENANT_ID).token_endpoint().as_str()),
        "{e:?}"
    );
    // Connection refused: a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let clock = FakeClock::fixed();
    let a = Authority::new(
        Cloud::custom(&format!("https://127.0.0.1:{port}/")).unwrap(),
        // A tenant whose name holds "tls"/"certificate" must not make a refused connection look like TLS.
        Tenant::Domain("tls-certificate-handshake.example.com".into()),
    );
    let c = TokenClient::new(
        a,
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        ClientOptions {
            sleeper: Arc::new(clock.clone()),
            ..options(&sbx)
        },
    )
    .unwrap();
    let e = c
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::Transport(t)
            if t.kind() == TransportKind::Connect && t.endpoint() == format!("https://127.0.0.1:{port}/tls-certificate-handshake.example.com/oauth2/v2.0/token")),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert_eq!(clock.sleeps().len(), 2, "two bounded retries with backoff");
}

/// Errors a person can act on: an unknown TLS issuer names `--ca-file` / `ca_file`; `http://` against the
/// HTTPS sandbox and `https://` against a plain-HTTP server are recognised as a scheme mismatch.
#[tokio::test]
async fn tls_and_scheme_mistakes_say_what_to_do() {
    let sbx = sandbox().await;
    let no_retry = || ClientOptions {
        retry: RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    };
    let ropc = |base: &str, options: ClientOptions| {
        let c = TokenClient::new(
            Authority::new(
                Cloud::custom(base).unwrap(),
                demo::TENANT_ID.parse().unwrap(),
            ),
            demo::PUBLIC_APP_ID,
            ClientCredential::Public,
            options,
        )
        .unwrap();
        async move {
            c.password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap())
                .await
                .unwrap_err()
        }
    };
    // The sandbox CA is not trusted.
    let e = ropc(sbx.base_url().as_str(), no_retry()).await;
    let AuthError::Transport(transport) = &e else {
        panic!("{e:?}")
    };
    assert!(transport.is_unknown_issuer(), "{e:?}");
    assert_eq!(e.class(), ErrorClass::Config);
    // The cause chain is kept, not flattened: it leads down to rustls' own error.
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    assert!(chain.len() >= 3, "{chain:?}");
    assert_eq!(
        transport.root_cause().as_deref(),
        Some("invalid peer certificate: UnknownIssuer"),
        "{chain:?}"
    );
    assert!(
        e.remedy().contains("pass --ca-file") && e.remedy().contains("ca_file in the profile"),
        "{}",
        e.remedy()
    );
    // http:// against the HTTPS sandbox.
    let plain = sbx.base_url().as_str().replace("https://", "http://");
    let e = ropc(&plain, no_retry()).await;
    match &e {
        AuthError::SchemeMismatch { url, server_tls } => {
            assert!(url.starts_with(&plain), "{url}");
            assert!(*server_tls);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.class(), ErrorClass::Config);
    assert!(e.to_string().contains("speaks HTTPS"), "{e}");
    assert!(e.remedy().contains("use https://"), "{}", e.remedy());
    assert_eq!(sbx.admin().stats().grant("password"), 0);
    // https:// against a plain-HTTP server (it answers the TLS hello with an HTTP 400).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            let _ = s.shutdown().await;
        }
    });
    let e = ropc(&format!("https://{addr}/"), options(&sbx)).await;
    assert!(
        matches!(
            e,
            AuthError::SchemeMismatch {
                server_tls: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("plain HTTP"), "{e}");
    assert!(e.remedy().contains("use http://"), "{}", e.remedy());
}

/// The 50055 remedy gives the `password_change_url` Entra (here the sandbox) sent.
#[tokio::test]
async fn expired_password_remedy_gives_the_password_change_url() {
    let sbx = sandbox().await;
    let e = public(&sbx)
        .password(
            demo::EXPIRED_PASSWORD_USER_UPN,
            &demo::EXPIRED_PASSWORD_USER_PASSWORD.into(),
            &imap(),
        )
        .await
        .unwrap_err();
    assert_eq!(codes(&e), vec![50055]);
    let url = format!("{}ChangePassword.aspx", sbx.base_url());
    assert_eq!(
        e.entra().unwrap().password_change_url.as_deref(),
        Some(url.as_str())
    );
    assert_eq!(
        e.remedy(),
        format!("the user must change the password at {url}, then retry")
    );
    assert!(e.to_string().contains(&url), "{e}");
}
