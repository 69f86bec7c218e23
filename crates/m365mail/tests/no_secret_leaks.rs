//! Secrets never reach logs or Debug output: run every flow against the sandbox with trace-level logging
//! captured, then search the capture (and Debug renderings) for every secret involved.

use std::io::Write;
use std::sync::{Arc, Mutex};

use m365mail::Secret;
use m365mail::auth::{
    Access, AssertionAlg, Authority, CertificateCredential, ClientCredential, ClientOptions, Cloud,
    Scopes, Target, TokenClient,
};
use m365mail_sandbox::{Sandbox, SandboxConfig, demo};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_logs_and_debug_output_hold_no_secret() {
    let capture = Capture::default();
    let writer = capture.clone();
    // Everything at TRACE (our crate, reqwest, hyper, rustls) except the sandbox's own logs.
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                !m.target().starts_with("m365mail_sandbox")
            })),
    );
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut config = SandboxConfig::default();
    config.lifetimes.device_poll_interval = std::time::Duration::from_secs(1);
    let sbx = Sandbox::start(config).await.unwrap();
    let authority = Authority::new(
        Cloud::custom(sbx.base_url().as_str()).unwrap(),
        demo::TENANT_ID.parse().unwrap(),
    );
    let opts = || ClientOptions {
        extra_ca_pem: Some(sbx.ca_pem().to_owned()),
        ..ClientOptions::default()
    };
    let imap = Scopes::for_target(Target::Imap, Access::Delegated, &Cloud::Global);
    let app = Scopes::for_target(Target::Imap, Access::AppOnly, &Cloud::Global);
    let mut secrets: Vec<String> = vec![
        demo::USER_PASSWORD.into(),
        demo::CONFIDENTIAL_APP_SECRET.into(),
        "Wrong-Password-7!".into(),
    ];
    let mut debug_dump = String::new();

    let public = TokenClient::new(
        authority.clone(),
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        opts(),
    )
    .unwrap();
    let t = public
        .password(demo::USER_UPN, &demo::USER_PASSWORD.into(), &imap)
        .await
        .unwrap();
    let rt = t.refresh_token.clone().unwrap();
    secrets.push(t.access_token.expose().to_owned());
    secrets.push(rt.expose().to_owned());
    debug_dump += &format!("{t:?}\n{public:?}\n");
    let t2 = public.refresh(&rt, &imap).await.unwrap();
    secrets.push(t2.access_token.expose().to_owned());
    secrets.push(t2.refresh_token.clone().unwrap().expose().to_owned());
    let e = public
        .password(demo::USER_UPN, &"Wrong-Password-7!".into(), &imap)
        .await
        .unwrap_err();
    debug_dump += &format!("{e:?}\n{e}\n");

    let confidential = TokenClient::new(
        authority.clone(),
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(demo::CONFIDENTIAL_APP_SECRET.into()),
        opts(),
    )
    .unwrap();
    let t = confidential.client_credentials(&app).await.unwrap();
    secrets.push(t.access_token.expose().to_owned());
    debug_dump += &format!("{t:?}\n{confidential:?}\n");
    let basic = TokenClient::new(
        authority.clone(),
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::Secret {
            secret: demo::CONFIDENTIAL_APP_SECRET.into(),
            basic: true,
        },
        opts(),
    )
    .unwrap();
    basic.client_credentials(&app).await.unwrap();

    let cert = demo::certificate();
    let key_body: String = cert.private_key_pem.lines().nth(2).unwrap().to_owned();
    secrets.push(key_body);
    let cred = Arc::new(
        CertificateCredential::from_pem(
            cert.certificate_pem.as_bytes(),
            &Secret::new(cert.private_key_pem.clone()),
        )
        .unwrap(),
    );
    let with_cert = TokenClient::new(
        authority.clone(),
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::Certificate {
            cert: cred,
            alg: AssertionAlg::Ps256,
        },
        opts(),
    )
    .unwrap();
    let t = with_cert.client_credentials(&app).await.unwrap();
    secrets.push(t.access_token.expose().to_owned());
    debug_dump += &format!("{with_cert:?}\n");

    let admin = sbx.admin().clone();
    let t = public
        .device_code(
            &imap,
            move |c| {
                admin
                    .approve_device_code(&c.user_code, demo::USER_UPN)
                    .unwrap()
            },
            std::future::pending(),
        )
        .await;
    // The device flow waits a real 1 s interval here.
    let t = t.unwrap();
    secrets.push(t.access_token.expose().to_owned());
    secrets.push(t.refresh_token.unwrap().expose().to_owned());

    drop(_guard);
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("token request"), "the capture works:\n{logs}");
    eprintln!("captured {} log lines", logs.lines().count());
    for secret in &secrets {
        assert!(!secret.is_empty());
        assert!(
            !logs.contains(secret.as_str()),
            "a secret leaked into the logs: {}...",
            &secret[..8.min(secret.len())]
        );
        assert!(
            !debug_dump.contains(secret.as_str()),
            "a secret leaked into Debug/Display: {}...",
            &secret[..8.min(secret.len())]
        );
        // Also the form-encoded spelling (what a logged request body would show).
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        assert!(
            !logs.contains(&encoded),
            "a form-encoded secret leaked into the logs"
        );
    }
}
