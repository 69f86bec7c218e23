use base64::Engine;
use m365mail_sandbox::{Clock, SystemClock, demo};
use serde_json::json;

use crate::common::{TestSandbox, claims, start};

/// Everything an assertion test varies.
struct AssertionSpec {
    algorithm: jsonwebtoken::Algorithm,
    x5t: Option<String>,
    x5t_s256: Option<String>,
    audience: String,
    issuer: String,
    not_before: i64,
    expires: i64,
    private_key_pem: String,
}

impl AssertionSpec {
    fn valid(sandbox: &TestSandbox) -> Self {
        let now = SystemClock.unix_seconds() as i64;
        let certificate = demo::certificate();
        Self {
            algorithm: jsonwebtoken::Algorithm::RS256,
            x5t: Some(certificate.x5t.clone()),
            x5t_s256: None,
            audience: sandbox.token_url(demo::TENANT_ID),
            issuer: demo::CONFIDENTIAL_APP_ID.to_string(),
            not_before: now,
            expires: now + 600,
            private_key_pem: certificate.private_key_pem.clone(),
        }
    }

    fn sign(&self) -> String {
        let mut header = jsonwebtoken::Header::new(self.algorithm);
        header.typ = Some("JWT".into());
        header.x5t = self.x5t.clone();
        header.x5t_s256 = self.x5t_s256.clone();
        let claims = json!({
            "aud": self.audience,
            "iss": self.issuer,
            "sub": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": self.not_before,
            "iat": self.not_before,
            "exp": self.expires,
        });
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.private_key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

async fn with_assertion(
    sandbox: &TestSandbox,
    assertion: &str,
    scope: &str,
) -> crate::common::Answer {
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo::CONFIDENTIAL_APP_ID),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", scope),
            ],
        )
        .await
}

async fn with_secret(
    sandbox: &TestSandbox,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> crate::common::Answer {
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ],
        )
        .await
}

#[tokio::test]
async fn client_secret_post_gives_an_app_only_exchange_token_with_granted_roles() {
    let sandbox = start().await;
    let answer = with_secret(
        &sandbox,
        demo::CONFIDENTIAL_APP_ID,
        demo::CONFIDENTIAL_APP_SECRET,
        demo::EXCHANGE_APP_SCOPE,
    )
    .await;
    let body = answer.assert_ok();
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body.get("refresh_token").is_none(),
        "never a refresh token for client credentials"
    );
    assert!(body.get("id_token").is_none());
    let app_claims = sandbox
        .verified_claims(body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(app_claims["aud"], "https://outlook.office365.com");
    assert_eq!(
        app_claims["roles"],
        json!(["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"])
    );
    assert_eq!(app_claims["idtyp"], "app");
    assert_eq!(app_claims["appid"], demo::CONFIDENTIAL_APP_ID);
    assert_eq!(
        app_claims["oid"],
        demo::CONFIDENTIAL_APP_SERVICE_PRINCIPAL_ID
    );
    assert_eq!(app_claims["appidacr"], "1");
    assert!(app_claims.get("scp").is_none() && app_claims.get("upn").is_none());

    let graph = with_secret(
        &sandbox,
        demo::CONFIDENTIAL_APP_ID,
        demo::CONFIDENTIAL_APP_SECRET,
        demo::GRAPH_APP_SCOPE,
    )
    .await;
    let graph_claims = claims(graph.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(graph_claims["aud"], "https://graph.microsoft.com");
    assert_eq!(graph_claims["roles"], json!(["Mail.Send"]));
}

#[tokio::test]
async fn client_secret_basic_is_accepted() {
    let sandbox = start().await;
    let encode =
        |part: &str| url::form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>();
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(demo::CONFIDENTIAL_APP_ID),
        encode(demo::CONFIDENTIAL_APP_SECRET)
    ));
    let response = sandbox
        .http
        .post(sandbox.token_url(demo::TENANT_ID))
        .header("authorization", format!("Basic {credentials}"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", demo::EXCHANGE_APP_SCOPE),
        ])
        .send()
        .await
        .unwrap();
    let answer = crate::common::answer(response).await;
    assert_eq!(
        claims(answer.assert_ok()["access_token"].as_str().unwrap())["appid"],
        demo::CONFIDENTIAL_APP_ID
    );
}

#[tokio::test]
async fn secret_errors_carry_entra_codes() {
    let sandbox = start().await;
    with_secret(
        &sandbox,
        demo::CONFIDENTIAL_APP_ID,
        "not-the-secret",
        demo::EXCHANGE_APP_SCOPE,
    )
    .await
    .assert_error(401, "invalid_client", 7000215);
    // The classic mistake: the secret's ID instead of its value.
    with_secret(
        &sandbox,
        demo::CONFIDENTIAL_APP_ID,
        demo::CONFIDENTIAL_APP_SECRET_ID,
        demo::EXCHANGE_APP_SCOPE,
    )
    .await
    .assert_error(401, "invalid_client", 7000215);
    with_secret(
        &sandbox,
        demo::EXPIRED_SECRET_APP_ID,
        demo::EXPIRED_SECRET_APP_SECRET,
        demo::EXCHANGE_APP_SCOPE,
    )
    .await
    .assert_error(401, "invalid_client", 7000222);
    with_secret(
        &sandbox,
        demo::DISABLED_APP_ID,
        "x",
        demo::EXCHANGE_APP_SCOPE,
    )
    .await
    .assert_error(400, "unauthorized_client", 7000112);
    // A public client without credentials cannot use client credentials.
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", demo::PUBLIC_APP_ID),
                ("scope", demo::EXCHANGE_APP_SCOPE),
            ],
        )
        .await
        .assert_error(401, "invalid_client", 7000218);
}

#[tokio::test]
async fn client_credentials_scope_and_endpoint_errors() {
    let sandbox = start().await;
    let secret = |scope: &'static str| {
        with_secret(
            &sandbox,
            demo::CONFIDENTIAL_APP_ID,
            demo::CONFIDENTIAL_APP_SECRET,
            scope,
        )
    };
    secret(demo::IMAP_SCOPE)
        .await
        .assert_error(400, "invalid_scope", 1002012);
    // Double-encoded scope, a classic bug.
    secret("https%3A%2F%2Foutlook.office365.com%2F.default")
        .await
        .assert_error(400, "invalid_scope", 1002012);
    secret("https://outlook.office365.com/.default https://graph.microsoft.com/.default")
        .await
        .assert_error(400, "invalid_scope", 700022);
    secret("https://unknown.example.com/.default")
        .await
        .assert_error(400, "invalid_resource", 500011);
    for alias in ["organizations", "common"] {
        sandbox
            .token(
                alias,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", demo::CONFIDENTIAL_APP_ID),
                    ("client_secret", demo::CONFIDENTIAL_APP_SECRET),
                    ("scope", demo::EXCHANGE_APP_SCOPE),
                ],
            )
            .await
            .assert_error(400, "invalid_request", 9001023);
    }
}

#[tokio::test]
async fn certificate_assertions_rs256_x5t_and_ps256_x5t_s256_are_accepted() {
    let sandbox = start().await;
    let rs256 = AssertionSpec::valid(&sandbox).sign();
    let answer = with_assertion(&sandbox, &rs256, demo::EXCHANGE_APP_SCOPE).await;
    let claims_rs256 = claims(answer.assert_ok()["access_token"].as_str().unwrap());
    assert_eq!(claims_rs256["appidacr"], "2");

    let mut ps256 = AssertionSpec::valid(&sandbox);
    ps256.algorithm = jsonwebtoken::Algorithm::PS256;
    ps256.x5t = None;
    ps256.x5t_s256 = Some(demo::certificate().x5t_s256.clone());
    with_assertion(&sandbox, &ps256.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();

    // MSAL Python pads its base64url thumbprints; the digest is what counts.
    let mut padded = AssertionSpec::valid(&sandbox);
    padded.x5t = Some(format!("{}=", demo::certificate().x5t));
    with_assertion(&sandbox, &padded.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();

    // The domain form of the endpoint is an accepted audience too.
    let mut by_domain = AssertionSpec::valid(&sandbox);
    by_domain.audience = sandbox.token_url(demo::DOMAIN);
    with_assertion(&sandbox, &by_domain.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_ok();
}

#[tokio::test]
async fn certificate_assertion_errors_carry_entra_codes() {
    let sandbox = start().await;
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .unwrap()
        .serialize_pem();

    // Signed by a key other than the registered certificate's.
    let mut wrong_key = AssertionSpec::valid(&sandbox);
    wrong_key.private_key_pem = other_key.clone();
    let answer = with_assertion(&sandbox, &wrong_key.sign(), demo::EXCHANGE_APP_SCOPE).await;
    answer.assert_error(401, "invalid_client", 700027);

    // A thumbprint of a certificate that is not registered.
    let mut unregistered = AssertionSpec::valid(&sandbox);
    unregistered.x5t = Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let answer = with_assertion(&sandbox, &unregistered.sign(), demo::EXCHANGE_APP_SCOPE).await;
    let body = answer.assert_error(401, "invalid_client", 700027);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("The key was not found")
    );

    let mut expired = AssertionSpec::valid(&sandbox);
    expired.not_before -= 7200;
    expired.expires -= 3600;
    with_assertion(&sandbox, &expired.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 700024);

    let mut future = AssertionSpec::valid(&sandbox);
    future.not_before += 3600;
    future.expires += 3600;
    with_assertion(&sandbox, &future.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 700024);

    let mut wrong_audience = AssertionSpec::valid(&sandbox);
    wrong_audience.audience = "https://example.com/token".into();
    with_assertion(&sandbox, &wrong_audience.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 50012);

    let mut wrong_issuer = AssertionSpec::valid(&sandbox);
    wrong_issuer.issuer = demo::PUBLIC_APP_ID.into();
    with_assertion(&sandbox, &wrong_issuer.sign(), demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 700021);

    with_assertion(&sandbox, "not-a-jwt", demo::EXCHANGE_APP_SCOPE)
        .await
        .assert_error(401, "invalid_client", 50012);

    // A public client must not send an assertion.
    sandbox
        .token(
            demo::TENANT_ID,
            &[
                ("grant_type", "password"),
                ("client_id", demo::PUBLIC_APP_ID),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &AssertionSpec::valid(&sandbox).sign()),
                ("username", demo::USER_UPN),
                ("password", demo::USER_PASSWORD),
                ("scope", demo::IMAP_SCOPE),
            ],
        )
        .await
        .assert_error(401, "invalid_client", 700025);
}
