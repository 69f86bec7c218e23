//! MSAL Python compatibility: runs `tests/msal/test_msal.py` (msal pinned in tests/msal/requirements.txt)
//! against an in-process sandbox. Ignored by default because it needs Python with msal installed:
//! `pip install -r tests/msal/requirements.txt`, then `cargo test -p m365mail-sandbox -- --include-ignored`.

use std::{path::PathBuf, process::Command, time::Duration};

use m365mail_sandbox::{Lifetimes, Sandbox, SandboxConfig, demo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with msal (pip install -r tests/msal/requirements.txt)"]
async fn msal_python_gets_tokens_and_entra_error_codes() {
    let sandbox = Sandbox::start(SandboxConfig {
        // MSAL sleeps `interval` seconds between device-code polls; keep the test fast.
        lifetimes: Lifetimes {
            device_poll_interval: Duration::from_secs(1),
            ..Lifetimes::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts");
    let directory = tempfile::tempdir().unwrap();
    let ca = directory.path().join("ca.pem");
    sandbox.write_ca(&ca).unwrap();
    let certificate = demo::certificate();
    let certificate_path = directory.path().join("demo-app.crt.pem");
    let key_path = directory.path().join("demo-app.key.pem");
    std::fs::write(&certificate_path, &certificate.certificate_pem).unwrap();
    std::fs::write(&key_path, &certificate.private_key_pem).unwrap();

    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut command = Command::new("python3");
    command
        .arg("tests/msal/test_msal.py")
        .current_dir(&workspace)
        .env("SANDBOX_BASE_URL", sandbox.base_url().as_str())
        .env("SANDBOX_CA", &ca)
        .env("SANDBOX_TENANT_ID", demo::TENANT_ID)
        .env("SANDBOX_USER_UPN", demo::USER_UPN)
        .env("SANDBOX_USER_PASSWORD", demo::USER_PASSWORD)
        .env("SANDBOX_MFA_USER_UPN", demo::MFA_USER_UPN)
        .env("SANDBOX_MFA_USER_PASSWORD", demo::MFA_USER_PASSWORD)
        .env("SANDBOX_PUBLIC_APP_ID", demo::PUBLIC_APP_ID)
        .env("SANDBOX_NO_CONSENT_APP_ID", demo::NO_CONSENT_APP_ID)
        .env("SANDBOX_CONFIDENTIAL_APP_ID", demo::CONFIDENTIAL_APP_ID)
        .env(
            "SANDBOX_CONFIDENTIAL_APP_SECRET",
            demo::CONFIDENTIAL_APP_SECRET,
        )
        .env("SANDBOX_CERT_PEM", &certificate_path)
        .env("SANDBOX_KEY_PEM", &key_path)
        .env("SANDBOX_CERT_SHA1", &certificate.sha1_thumbprint_hex)
        // Whatever the caller's environment says, MSAL must trust only what the test gives it.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    sandbox.shutdown().await;
    assert!(
        output.status.success(),
        "MSAL Python tests failed:\n{stdout}\n{stderr}"
    );
}
