use m365mail_sandbox::{SandboxConfig, TenantModel, demo};

use crate::common::start_with;

const FABRIKAM: &str = r#"
[[tenants]]
id = "6f1a3b2c-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
display_name = "Fabrikam"
domains = ["fabrikam.onmicrosoft.com"]

[[tenants.users]]
upn = "ann@fabrikam.onmicrosoft.com"
object_id = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
display_name = "Ann"
password = "correct horse"

[[tenants.apps]]
client_id = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
display_name = "Mail client"
allow_public_client_flows = true
redirect_uris = ["http://localhost"]

[[tenants.apps.delegated_grants]]
resource = "00000002-0000-0ff1-ce00-000000000000"
scopes = ["IMAP.AccessAsUser.All"]
"#;

#[test]
fn the_demo_model_round_trips_through_toml() {
    let demo_model = TenantModel::demo();
    let text = demo_model.to_toml_string().unwrap();
    assert_eq!(TenantModel::from_toml_str(&text).unwrap(), demo_model);
}

#[test]
fn tenant_files_are_validated() {
    let duplicated = FABRIKAM.to_string()
        + &FABRIKAM.replace(
            "6f1a3b2c-0d4e-4f5a-8b6c-7d8e9f0a1b2c",
            "7f1a3b2c-0d4e-4f5a-8b6c-7d8e9f0a1b2c",
        );
    let error = TenantModel::from_toml_str(&duplicated).unwrap_err();
    assert!(
        matches!(
            &error,
            m365mail_sandbox::SandboxError::TenantModel(message)
                if message == "tenant id or domain fabrikam.onmicrosoft.com appears twice"
        ),
        "{error:?}"
    );
    let unknown_field =
        TenantModel::from_toml_str("[[tenants]]\nid = \"x\"\ncolour = \"blue\"\n").unwrap_err();
    let m365mail_sandbox::SandboxError::TenantModel(message) = &unknown_field else {
        panic!("a tenant model error: {unknown_field:?}");
    };
    assert!(
        message.contains("unknown field `colour`"),
        "names the field: {message}"
    );
}

#[tokio::test]
async fn a_tenant_loaded_from_a_file_is_served() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("fabrikam.toml");
    std::fs::write(&path, FABRIKAM).unwrap();
    let model = TenantModel::from_file(&path).unwrap();
    assert_eq!(
        model.tenants[0].resources.len(),
        2,
        "Exchange and Graph by default"
    );
    let sandbox = start_with(SandboxConfig {
        tenant: model,
        ..SandboxConfig::default()
    })
    .await;
    let answer = sandbox
        .token(
            "fabrikam.onmicrosoft.com",
            &[
                ("grant_type", "password"),
                ("client_id", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
                ("username", "ann@fabrikam.onmicrosoft.com"),
                ("password", "correct horse"),
                ("scope", demo::IMAP_SCOPE),
            ],
        )
        .await;
    let claims = crate::common::claims(answer.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(claims["tid"], "6f1a3b2c-0d4e-4f5a-8b6c-7d8e9f0a1b2c");
    // The demo tenant is not part of this model.
    sandbox
        .get_json(&format!(
            "{}/v2.0/.well-known/openid-configuration",
            demo::TENANT_ID
        ))
        .await
        .assert_error(400, "invalid_request", 90002);
}

#[test]
fn the_ca_can_be_written_to_a_file() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sandbox = m365mail_sandbox::Sandbox::start(SandboxConfig::default())
            .await
            .unwrap();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("ca.pem");
        sandbox.write_ca(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, sandbox.ca_pem());
        assert!(written.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(written.ends_with("-----END CERTIFICATE-----\n"));
        assert_eq!(
            written.matches("BEGIN CERTIFICATE").count(),
            1,
            "one certificate"
        );
        sandbox.shutdown().await;
    });
}

#[tokio::test]
async fn the_sandbox_refuses_to_listen_beyond_loopback() {
    let config = SandboxConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..SandboxConfig::default()
    };
    let error = m365mail_sandbox::Sandbox::start(config).await.unwrap_err();
    assert!(
        matches!(
            &error,
            m365mail_sandbox::SandboxError::InvalidRequest(message)
                if message == "the sandbox listens on loopback only, not 0.0.0.0:0"
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn ipv6_loopback_is_served_with_a_matching_certificate() {
    let config = SandboxConfig {
        bind: "[::1]:0".parse().unwrap(),
        ..SandboxConfig::default()
    };
    let sandbox = match m365mail_sandbox::Sandbox::start(config).await {
        Ok(sandbox) => sandbox,
        // Hosts without IPv6 cannot run this test; everything else must.
        Err(m365mail_sandbox::SandboxError::Bind { .. }) => return,
        Err(other) => panic!("{other}"),
    };
    assert_eq!(sandbox.base_url().host_str(), Some("[::1]"));
    let client = crate::common::client_for(&sandbox);
    let answer = crate::common::answer(
        client
            .get(format!(
                "{}{}/discovery/v2.0/keys",
                sandbox.base_url(),
                demo::TENANT_ID
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    answer.assert_ok();
    sandbox.shutdown().await;
}

#[tokio::test]
async fn serve_until_writes_the_ca_and_stops_on_request() {
    let directory = tempfile::tempdir().unwrap();
    let ca_path = directory.path().join("ca.pem");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(m365mail_sandbox::serve_until(
        SandboxConfig::default(),
        Some(ca_path.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    // Wait for the CA file: it is written once the sandbox is listening.
    for _ in 0..200 {
        if std::fs::read_to_string(&ca_path).is_ok_and(|pem| pem.contains("END CERTIFICATE")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        std::fs::read_to_string(&ca_path)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_summary_lists_identities_but_no_secrets() {
    let sandbox = crate::common::start().await;
    let summary = sandbox.sandbox.summary();
    assert!(summary.contains(demo::TENANT_ID) && summary.contains(demo::DOMAIN));
    assert!(summary.contains(demo::MFA_USER_UPN) && summary.contains("mfa-required"));
    assert!(summary.contains(demo::CONFIDENTIAL_APP_ID));
    for secret in [
        demo::USER_PASSWORD,
        demo::CONFIDENTIAL_APP_SECRET,
        demo::MFA_USER_PASSWORD,
    ] {
        assert!(!summary.contains(secret), "summary leaks a secret");
    }
}

#[test]
fn debug_output_never_shows_passwords_or_secret_values() {
    let rendered = format!("{:?}", SandboxConfig::default());
    for secret in [
        demo::USER_PASSWORD,
        demo::CONFIDENTIAL_APP_SECRET,
        demo::EXPIRED_SECRET_APP_SECRET,
    ] {
        assert!(!rendered.contains(secret), "Debug leaks a secret");
    }
    assert!(
        rendered.contains(demo::USER_UPN),
        "identifiers stay visible"
    );
    let update = m365mail_sandbox::admin::UserUpdate {
        password: Some("Hunter2-Secret!".into()),
        ..Default::default()
    };
    assert!(!format!("{update:?}").contains("Hunter2"));
}
