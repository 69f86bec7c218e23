//! The sandbox's error bodies against Entra's, from the golden files in `testdata/entra/`: for the same
//! condition, the same HTTP status, `error`, code, `suberror`, the same set of fields, and the description
//! in Entra's `AADSTSnnnnn: …\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …` form.

use std::collections::BTreeSet;

use m365mail_sandbox::demo;
use serde_json::Value;

use crate::common::{Answer, TestSandbox, start};

fn golden(name: &str) -> Value {
    let path = format!(
        "{}/../../testdata/entra/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[track_caller]
fn assert_same_shape(name: &str, status: u16, answer: &Answer) {
    let want = golden(name);
    let got = &answer.body;
    assert_eq!(answer.status, status, "{name}: {got}");
    assert_eq!(keys(got), keys(&want), "{name}: {got}");
    for field in ["error", "error_codes", "suberror", "error_uri"] {
        assert_eq!(got[field], want[field], "{name}: {field}");
    }
    let code = want["error_codes"][0].as_u64().unwrap();
    let description = got["error_description"].as_str().unwrap();
    let (message, suffix) = description.split_once("\r\nTrace ID: ").unwrap();
    assert!(
        message.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    let trace = got["trace_id"].as_str().unwrap();
    let correlation = got["correlation_id"].as_str().unwrap();
    let timestamp = got["timestamp"].as_str().unwrap();
    assert_eq!(
        suffix,
        format!("{trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}"),
        "{name}"
    );
    // Timestamps are `YYYY-MM-DD hh:mm:ssZ` in both.
    assert_eq!(timestamp.len(), want["timestamp"].as_str().unwrap().len());
}

async fn ropc_as(sandbox: &TestSandbox, client_id: &str, user: &str, password: &str) -> Answer {
    sandbox
        .ropc(client_id, user, password, demo::IMAP_SCOPE)
        .await
}

#[tokio::test]
async fn every_golden_error_body_has_the_shape_the_sandbox_answers_with() {
    let sandbox = start().await;
    let a = ropc_as(&sandbox, demo::PUBLIC_APP_ID, demo::USER_UPN, "wrong").await;
    assert_same_shape("invalid_grant-50126", 400, &a);
    let a = ropc_as(
        &sandbox,
        demo::PUBLIC_APP_ID,
        demo::MFA_USER_UPN,
        demo::MFA_USER_PASSWORD,
    )
    .await;
    assert_same_shape("invalid_grant-50076", 400, &a);
    let claims: Value = serde_json::from_str(a.body["claims"].as_str().unwrap()).unwrap();
    assert!(claims["access_token"].is_object(), "{claims}");
    let a = ropc_as(
        &sandbox,
        demo::NO_CONSENT_APP_ID,
        demo::USER_UPN,
        demo::USER_PASSWORD,
    )
    .await;
    assert_same_shape("invalid_grant-65001", 400, &a);
    let a = ropc_as(
        &sandbox,
        demo::PUBLIC_APP_ID,
        demo::EXPIRED_PASSWORD_USER_UPN,
        demo::EXPIRED_PASSWORD_USER_PASSWORD,
    )
    .await;
    assert_same_shape("invalid_grant-50055", 400, &a);
    let a = sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo::CONFIDENTIAL_APP_ID),
                ("client_secret", demo::CONFIDENTIAL_APP_SECRET_ID),
                ("scope", demo::EXCHANGE_APP_SCOPE),
            ],
        )
        .await;
    assert_same_shape("invalid_client-7000215", 401, &a);
    let started = sandbox.start_device_flow().await;
    let device_code = started["device_code"].as_str().unwrap().to_owned();
    let a = sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("device_code", &device_code),
            ],
        )
        .await;
    assert_same_shape("authorization_pending-70016", 400, &a);
}
